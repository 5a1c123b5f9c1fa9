"""The multi-task training loop: explicit, top to bottom, no framework and no callbacks.

    data (per-task labels) ─► plan_epoch: which examples, which task, in what order (pure, from seed and epoch)
    for each step:  lr_at(step) ─► micro-batches ─► Σ_t w_t · CE_t ─► backward ─► clip ─► AdamW step
    every eval_every steps and at the end: dev metrics ─► metrics.jsonl, best checkpoint; always: last checkpoint
    at the very end: test metrics and predictions.jsonl

Run: python -m minimt train CONFIG.json [--key=value ...]   (see examples/04_train.py and the README)

Read examples/train_loop.py first: the same loop in 60 lines, without resume, processes, caches or checkpoints.
Here every helper takes one Run, the state of the run (model, optimizer, data, step), rather than a dozen arguments.
"""
import itertools
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from tqdm import tqdm  # installed with huggingface-hub

from minimt.data import (IGNORE, Source, check_labels, check_mixing, encode_labels, label_maps, load_splits, not_utf8,
                         of_type, plan_epoch)
from minimt.devices import check_dtype
from minimt.encoder import SentenceEncoder
from minimt.errors import UserError
from minimt.evaluate import evaluate
from minimt.freeze import check_rates, freeze, open_units, param_groups, trainable_table, unfreeze_schedule
from minimt.io import checkpoint, distributed, files, rundir
from minimt.multitask import EmbeddingCache, MultiTaskModel, check_head
from minimt.objectives import pair_losses, pair_tasks, primary, summary


SCHEDULES = ("linear", "cosine", "constant")  # what lr_at does after warmup


@dataclass
class TrainConfig:
    sources: list = field(default_factory=list)  # minimt.data.Source fields, one dict per dataset file
    data_dir: str = ""               # "" = data/ (or $MINIMT_DATA), filled by `make data`
    split_seed: int = 0              # train/dev/test split of sources that have none
    split_fractions: list = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train, dev, test shares of that split
    allow_empty_dev: bool = False    # True: a dev split that comes out empty is allowed; best/ is then the last step
    model: str = "all-MiniLM-L6-v2"  # checkpoint directory or name in weights/
    init_from: str = ""              # a trained MultiTaskModel checkpoint: start from its encoder and matching heads
    max_seq_length: int = 0          # 0 = the model's (256); shorter trains faster on long reviews
    head: str = "linear"             # "linear" | "mlp"
    dropout: float = 0.1
    freeze: list = field(default_factory=list)  # freeze targets, e.g. ["backbone"] or ["top:2"] (minimt/freeze.py)
    unfreeze_every: int = 0          # > 0: gradual unfreezing, one more layer from the top every N steps
    cache_embeddings: bool = False   # backbone frozen only: encode each text once, train the heads on the vectors
    mixing: str = "joint"            # "joint" | "round_robin" | "proportional"
    temperature: float = 1.0         # proportional mixing: task probability ∝ size ** (1 / temperature)
    task_weights: dict = field(default_factory=dict)  # loss weight per task (default 1)
    epochs: int = 1
    max_steps: int = 0               # > 0: end after this many optimizer steps (the lr schedule spans them)
    batch_size: int = 32
    grad_accum: int = 1              # micro-batches per optimizer step
    lr: float = 5e-5                 # encoder's top layer; lower layers get lr * layer_decay ** depth
    head_lr: float = 0.0             # 0 = same as lr
    layer_decay: float = 1.0         # layer-wise lr decay (LLRD); 1 = none
    weight_decay: float = 0.01
    warmup: float = 0.1              # fraction of steps with linearly rising lr
    schedule: str = "linear"         # after warmup: "linear" | "cosine" decay to 0, or "constant"
    clip: float = 1.0                # max gradient norm (0 = no clipping)
    bf16: bool = False               # bfloat16 autocast (on the CPU or a GPU)
    fp16: bool = False               # float16 autocast with loss scaling (CUDA only: CPUs have no fast fp16 path)
    device: str = "auto"             # "auto" = cuda if present, else mps, else cpu; or "cpu", "cuda:1", ...
    compile: bool = False            # the encoder's forward and backward through torch.compile (MultiTaskModel.compile)
    seed: int = 0
    eval_every: int = 0              # steps between dev evaluations; 0 = end of every epoch
    log_every: int = 10              # steps between training-loss lines (metrics.jsonl "split": "train", stderr)
    eval_batch_size: int = 64
    out_dir: str = "runs/train"
    resume: bool = False             # continue from out_dir/last exactly where it stopped
    overwrite: bool = False          # start over in an out_dir that holds a run (its checkpoints are replaced)
    resume_force: bool = False       # --resume even with settings that differ from the saved run's (not exact)

    # what may change on --resume and leave the weights as an uninterrupted run's (rundir.check_resume); every
    # other setting shapes the weights
    SAFE_TO_CHANGE: ClassVar[tuple] = ("eval_every", "log_every", "eval_batch_size", "device", "out_dir", "resume",
                                       "overwrite", "resume_force")

    def __post_init__(self):
        for f in fields(self):  # types first: "2.5" steps or a "no" flag must fail here, not mid-run
            v = getattr(self, f.name)
            if f.type is list and isinstance(v, str):
                v = [v]  # --freeze=backbone means ["backbone"]
                setattr(self, f.name, v)
            if not of_type(v, f.type):
                raise UserError(f"setting {f.name}={v!r} must be {TYPE_NAMES[f.type]} (e.g. --{f.name}="
                                f"{json.dumps(f.default_factory() if callable(f.default_factory) else f.default)})")
        for name, (ok, rule) in RANGES.items():
            if not ok(getattr(self, name)):
                raise UserError(f"setting {name}={getattr(self, name)!r} is out of range: it must be {rule}")
        check_rates(self.lr, self.weight_decay, self.layer_decay, self.head_lr)  # freeze.py's rule, checked now
        check_mixing(self.mixing)
        check_head(self.head)
        if self.schedule not in SCHEDULES:
            raise UserError(f"schedule={self.schedule!r} is not supported; use one of {list(SCHEDULES)}")
        bad = {t: w for t, w in self.task_weights.items()
               if not isinstance(w, (int, float)) or isinstance(w, bool) or not 0 <= w < math.inf}
        if bad:
            raise UserError(f"task_weights {bad}: each weight must be a number >= 0 (0 = the task does not train)")
        if self.bf16 and self.fp16:
            raise UserError("bf16 and fp16 exclude each other: choose one autocast dtype")
        if self.cache_embeddings and "backbone" not in self.freeze and "all" not in self.freeze:
            raise UserError("cache_embeddings needs the backbone frozen: add \"backbone\" to freeze")
        if self.cache_embeddings and self.unfreeze_every:
            raise UserError("cache_embeddings and unfreeze_every exclude each other: the backbone must stay frozen")
        if self.compile and self.unfreeze_every:
            raise UserError("compile and unfreeze_every exclude each other: each unfreezing would compile the encoder "
                            "again; train eagerly, or freeze once (freeze=[...])")
        if self.resume and self.overwrite:
            raise UserError("resume and overwrite exclude each other: continue the run or start it over")


TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
              list: "a list", dict: "a mapping"}
# setting -> (test, the rule in words): checked once, when the config is made
RANGES = {
    "max_seq_length": (lambda v: v >= 0, ">= 0 (0 = the model's own)"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "unfreeze_every": (lambda v: v >= 0, ">= 0 (0 = no gradual unfreezing)"),
    "temperature": (lambda v: 0 < v < math.inf, "> 0"),
    "epochs": (lambda v: v >= 1, ">= 1"),
    "max_steps": (lambda v: v >= 0, ">= 0 (0 = as many as the epochs give)"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "grad_accum": (lambda v: v >= 1, ">= 1 (micro-batches per optimizer step)"),
    "warmup": (lambda v: 0 <= v <= 1, "a fraction of the steps, in [0, 1]"),
    "clip": (lambda v: 0 <= v < math.inf, ">= 0 (0 = no clipping)"),
    "eval_every": (lambda v: v >= 0, ">= 0 (0 = at the end of every epoch)"),
    "log_every": (lambda v: v >= 1, ">= 1 (steps between training-loss lines)"),
    "eval_batch_size": (lambda v: v >= 1, ">= 1"),
    "model": (lambda v: v != "", "a checkpoint directory or a model name"),
    "out_dir": (lambda v: v != "", "a directory"),
    "sources": (lambda v: all(isinstance(s, dict) for s in v), "a list of mappings (minimt.data.Source fields)"),
    "split_fractions": (lambda v: len(v) == 3 and all(isinstance(x, (int, float)) and x >= 0 for x in v)
                        and abs(sum(v) - 1) < 1e-6, "three numbers >= 0 (train, dev, test) that sum to 1"),
    "freeze": (lambda v: all(isinstance(t, str) for t in v), "a list of targets, e.g. [\"backbone\"]"),
}


def lr_at(step, total, warmup, schedule):
    """Multiplier of the base lr at `step` (0-based) of `total`: linear warmup, then decay to 0."""
    n_warm = int(warmup * total)
    if step < n_warm:
        return (step + 1) / n_warm
    if schedule == "constant":
        return 1.0
    progress = (step - n_warm) / max(1, total - n_warm)
    return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


def task_loss(logits, labels, task, weights, counts=None):
    """Weighted sum over tasks of mean cross-entropy on the rows that carry that task's label (IGNORE = none).
    `task` None (joint): every head contributes, even with no labelled row (as 0), so all take part every step;
    a pairs or contrastive task (no head) is objectives.pair_losses'. counts: labelled rows per task in the whole
    batch, when this process holds only a share of it (DDP)."""
    loss = 0.0
    for t in ([task] if task in logits else [] if task else logits):
        y = labels[t]
        n = (counts[t] if counts is not None else (y != IGNORE).sum()).clamp(min=1)
        loss = loss + weights.get(t, 1.0) * F.cross_entropy(logits[t].float(), y, ignore_index=IGNORE,
                                                            reduction="sum") / n
    return loss


@dataclass
class Run:
    """The state one training run carries from step to step: train() builds it, every helper below reads it."""
    cfg: TrainConfig
    model: MultiTaskModel
    opt: torch.optim.Optimizer
    maps: dict                        # {task: [label, ...]}: the classification tasks and their heads
    specs: dict = field(default_factory=dict)   # {task: Source}: the pairs and contrastive tasks (no head)
    splits: dict = field(default_factory=dict)  # {"train": [Example], "dev": [...], "test": [...]}
    scaler: torch.amp.GradScaler = None  # fp16's loss scaling (off otherwise)
    cache: EmbeddingCache = None      # frozen backbone: each text's vector, encoded once
    rank: int = 0                     # this process, of `world` (torchrun); rank 0 logs and writes
    world: int = 1
    log: Callable = print
    metrics: object = None            # out_dir/metrics.jsonl, open for appending (rank 0)
    step: int = 0                     # optimizer steps taken
    best: float = -1.0                # the best dev score so far (best/ holds its checkpoint)
    per_epoch: int = 1                # optimizer steps per epoch
    total: int = 1                    # optimizer steps in the whole run

    def __post_init__(self):
        self.scaler = self.scaler or torch.amp.GradScaler(self.model.device.type, enabled=False)


def build_optimizer(model, cfg):
    """Freeze as configured (gradual unfreezing starts from a frozen backbone), then one AdamW over the trainable
    groups; every group remembers its base_lr, which lr_at scales each step."""
    freeze(model, *cfg.freeze)
    if cfg.unfreeze_every:
        freeze(model, "backbone")  # ULMFiT: heads first, then one layer at a time from the top
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.layer_decay, cfg.head_lr)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, fused=True)  # one kernel per step, not ~10 per tensor
    for g in opt.param_groups:
        g["base_lr"] = g["lr"]
    return opt


def unfreeze_due(run, step):
    """Gradual unfreezing, the one place it happens: open every unit due by `step` (in schedule order, so a
    resumed run's optimizer groups line up with the original's). Returns the names opened now."""
    cfg = run.cfg
    if not cfg.unfreeze_every:
        return []
    opened = open_units(run.model, run.opt, unfreeze_schedule(step, cfg.unfreeze_every, len(run.model.bert.layers)),
                        cfg.lr, cfg.weight_decay, cfg.layer_decay, cfg.head_lr)
    for g in run.opt.param_groups:
        g.setdefault("base_lr", g["lr"])
    return opened


def resume(run):
    """With --resume: out_dir/last's weights, optimizer, loss scale, RNG, step and best score into `run`."""
    last = Path(run.cfg.out_dir) / "last"
    state = checkpoint.load_train_state(last)
    run.model.load_state_dict(checkpoint.load_tensors(last))
    if state["step"] > 0:
        unfreeze_due(run, state["step"] - 1)  # the groups the optimizer had when it was saved
    run.opt.load_state_dict(state["optimizer"])
    if state.get("scaler"):  # fp16: the loss scale goes on from where it was
        run.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    run.step, run.best = state["step"], state["best"]


def train_step(run, micro):
    """One optimizer step: forward and backward over the micro-batches [(task, examples)], the gradients summed
    over processes, clipping, AdamW. The loss of each micro-batch is averaged over them; returns the loss.
    A pair task's rows bring a second text (and hard negatives), encoded in the same forward as every other text.
    fp16 (run.scaler): its gradients underflow to 0 below ~6e-8, so the loss is multiplied by a large factor
    before backward and the gradients divided by it before clipping; a step whose gradients overflowed to inf is
    skipped and the factor lowered (bf16 has fp32's exponent range and needs none of this)."""
    model, cfg, maps = run.model, run.cfg, run.maps
    model.train()  # dropout on; frozen units stay in eval mode (MultiTaskModel.train)
    autocast = torch.autocast(model.device.type, torch.float16 if cfg.fp16 else torch.bfloat16,
                              enabled=cfg.bf16 or cfg.fp16)
    total = 0.0
    for task, examples in micro:
        mine = examples[run.rank::run.world]  # this process's share of the batch
        labels = {t: y.to(model.device) for t, y in encode_labels(mine, maps).items()}
        counts = distributed.all_sum(torch.stack([(labels[t] != IGNORE).sum() for t in maps])) if maps else []
        if mine:
            with autocast:
                per_row = [ex.texts() for ex in mine]  # a pair row brings text_b (and hard negatives) too
                texts = [t for row in per_row for t in row]
                starts = [0] + list(itertools.accumulate(len(row) for row in per_row))[:-1]  # each row's first
                vectors = run.cache(mine) if run.cache is not None else model(model.tokenizer.encode(texts))  # (n, H)
                loss = task_loss(model.classify(vectors[starts]), labels, task, cfg.task_weights,
                                 dict(zip(maps, counts)))
                loss = loss + pair_losses(vectors, starts, mine, run.specs, task, cfg.task_weights)
            run.scaler.scale(loss / len(micro)).backward()
            total += loss.item() / len(micro)
    trainable = [p for g in run.opt.param_groups for p in g["params"]]
    distributed.sync_gradients(trainable)  # several processes: every rank now holds the whole batch's gradient
    run.scaler.unscale_(run.opt)  # clip the true gradients, not the scaled ones
    if cfg.clip:  # frozen tensors are in no group, so neither clipping nor weight decay touches them
        torch.nn.utils.clip_grad_norm_(trainable, cfg.clip)
    run.scaler.step(run.opt)
    run.scaler.update()
    run.opt.zero_grad(set_to_none=True)
    return total


def evaluate_and_save(run, rate):
    """Dev metrics into metrics.jsonl; the best checkpoint (mean over tasks of each one's primary metric: macro-F1,
    Spearman / 100, MRR) if this one beats it; always the last checkpoint, with what --resume needs."""
    out, cfg, epoch = Path(run.cfg.out_dir), run.cfg, run.step / run.per_epoch
    if not run.splits["dev"]:  # allow_empty_dev: nothing to choose on; best/ is the last step
        run.best = run.step
        meta = {"train": asdict(cfg), "step": run.step, "dev": {}}
        print(f"\nstep {run.step}  no dev split: best/ is this step ({rate:.0f} samples/s)")
        checkpoint.save(out / "best", run.model, meta)
        return save_last(run, meta)
    res, _ = evaluate(run.model, run.splits["dev"], run.maps, "dev", cfg.eval_batch_size, run.cache, records=False,
                      specs=run.specs)
    for t, r in res.items():
        log_line(run, step=run.step, epoch=epoch, split="dev", task=t, **r, lr=lrs(run.opt), samples_per_s=rate)
    print(f"\nstep {run.step}  dev " + "  ".join(f"{t}: {summary(r)}" for t, r in res.items())
          + f"  ({rate:.0f} samples/s)")
    meta = {"train": asdict(cfg), "step": run.step, "dev": {t: {k: v for k, v in r.items() if k != "confusion"}
                                                              for t, r in res.items()}}
    score = sum(primary(r["kind"], r) for r in res.values()) / len(res)
    if score > run.best:
        run.best = score
        checkpoint.save(out / "best", run.model, meta)
    save_last(run, meta)


def save_last(run, meta):
    """The last checkpoint, with what --resume needs to go on exactly as an uninterrupted run."""
    checkpoint.save(Path(run.cfg.out_dir) / "last", run.model, meta,
                    {"optimizer": run.opt.state_dict(), "rng": torch.get_rng_state(), "scaler": run.scaler.state_dict(),
                     "step": run.step, "best": run.best})


def score_best(run):
    """The best checkpoint on dev and test: metrics.jsonl lines and one predictions.jsonl line per example and task."""
    out, cfg = Path(run.cfg.out_dir), run.cfg
    best_model = MultiTaskModel.from_checkpoint(out / "best")
    lines = []
    for split in [name for name in ("dev", "test") if run.splits[name]]:  # dev may be empty (allow_empty_dev)
        res, preds = evaluate(best_model, run.splits[split], run.maps, split, cfg.eval_batch_size, specs=run.specs)
        for t, r in res.items():
            log_line(run, step=run.step, epoch=run.step / run.per_epoch, split=split, task=t, **r, checkpoint="best")
            print(f"{split:4s} {t}: {summary(r)}  (n={r['n']})")
        lines += [json.dumps(p, ensure_ascii=False) + "\n" for p in preds]
    files.write_text(out / "predictions.jsonl", "".join(lines), "out_dir")  # whole or not at all
    return best_model


def train(cfg: TrainConfig, stop_after=0):
    """Train as `cfg` says, in out_dir; returns the best checkpoint's model. stop_after > 0: stop after that many
    steps of this call, as a kill would, leaving last/ to --resume from (tests use it)."""
    device = distributed.local_device(cfg.device)
    if cfg.fp16:
        check_dtype("float16", device)
    rank, world = distributed.init(device)
    if world > 1 and cfg.resume:
        raise UserError("resume with several processes is not supported yet (each rank's RNG would have to be "
                        "saved); resume with a single process")
    log = print if rank == 0 else quiet  # one process speaks, writes logs and checkpoints
    with rundir.claim(cfg, log, enabled=rank == 0):  # out_dir is this run's until it ends (minimt/io/rundir.py)
        run = start(cfg, device, rank, world, log)
        try:
            if run.step == run.total:  # --resume of a run that had finished: its results stand as they are
                log(f"{cfg.out_dir} holds a finished run (step {run.step} of {run.total}); nothing to do")
                model = MultiTaskModel.from_checkpoint(Path(cfg.out_dir) / "best")
            else:
                loop(run, stop_after)
                model = score_best(run) if rank == 0 and run.step == run.total else run.model
        finally:
            if run.metrics:
                run.metrics.close()
    distributed.finish()
    return model


def start(cfg, device, rank, world, log):
    """The Run at its first step (or where --resume left it): data, model, optimizer, cache, metrics file."""
    torch.manual_seed(cfg.seed)
    splits, maps, specs = load_data(cfg, log)
    unknown = set(cfg.task_weights) - set(maps) - set(specs)
    if unknown:
        raise UserError(f"task_weights names {sorted(unknown)}, which no source defines; the tasks are "
                        f"{list(maps) + list(specs)}")
    if specs and (cfg.cache_embeddings or world > 1):
        raise UserError(f"the pair tasks {list(specs)} train the encoder itself: they cannot use cached embeddings, "
                        f"and several processes are not supported for them yet (in-batch negatives would have to "
                        f"be gathered across processes)")
    model = build_model(cfg, maps, log, device)
    if world > 1:
        torch.manual_seed(cfg.seed + rank)  # same initial weights everywhere, different dropout per rank
    run = Run(cfg, model, build_optimizer(model, cfg), maps, specs, splits,
              torch.amp.GradScaler(device.type, enabled=cfg.fp16), rank=rank, world=world, log=log)
    plan = plan_epoch(splits["train"], list(maps) + list(specs), cfg.batch_size, cfg.mixing, cfg.seed, 0,
                      cfg.temperature)
    run.per_epoch = math.ceil(len(plan) / cfg.grad_accum)
    run.total = min(cfg.epochs * run.per_epoch, cfg.max_steps or 10**12)
    if cfg.resume:
        resume(run)
        log(f"resuming from {Path(cfg.out_dir) / 'last'} at step {run.step}")
    log(trainable_table(model, run.opt.param_groups))
    if cfg.cache_embeddings and run.step < run.total:  # a finished run (--resume) encodes nothing
        t = time.perf_counter()
        run.cache = EmbeddingCache(model, [ex.text for exs in splits.values() for ex in exs])
        log(f"embedding cache: {len(run.cache.row)} distinct texts encoded once in {time.perf_counter() - t:.1f}s")
    if rank == 0:
        if cfg.resume and (dropped := rundir.trim_metrics(Path(cfg.out_dir) / "metrics.jsonl", run.step)):
            log(f"metrics.jsonl: dropped {dropped} lines past step {run.step}, which this run writes again")
        run.metrics = open(Path(cfg.out_dir) / "metrics.jsonl", "a", encoding="utf-8")
    return run


def loop(run, stop_after=0):
    """The steps from run.step to run.total: batch, lr, step, log, evaluate and save."""
    cfg, train_set, tasks = run.cfg, run.splits["train"], list(run.maps) + list(run.specs)
    run_steps, seen, train_time, plan = 0, 0, 0.0, None
    bar = tqdm(total=run.total, initial=run.step, desc="train", unit="step",
               disable=run.rank != 0 or not sys.stderr.isatty())
    while run.step < run.total:
        t0 = time.perf_counter()
        epoch, in_epoch = divmod(run.step, run.per_epoch)
        if in_epoch == 0 or plan is None:  # a pure function of (seed, epoch): --resume finds its place in it
            plan = plan_epoch(train_set, tasks, cfg.batch_size, cfg.mixing, cfg.seed, epoch, cfg.temperature)
        micro = [(task, [train_set[i] for i in idx])
                 for task, idx in plan[in_epoch * cfg.grad_accum:(in_epoch + 1) * cfg.grad_accum]]
        if opened := unfreeze_due(run, run.step):
            run.log(f"step {run.step}: unfroze {', '.join(opened)}")
        for g in run.opt.param_groups:
            g["lr"] = g["base_lr"] * lr_at(run.step, run.total, cfg.warmup, cfg.schedule)
        loss = train_step(run, micro)
        if not math.isfinite(loss):  # stop before a diverged model overwrites the last good checkpoint
            raise UserError(f"step {run.step}: the training loss is {loss}; lower lr (now {cfg.lr}) or set clip, "
                            f"then --resume=true from the last checkpoint or start over with --overwrite=true")
        run.step, run_steps, seen = run.step + 1, run_steps + 1, seen + sum(len(ex) for _, ex in micro)
        train_time += time.perf_counter() - t0
        bar.update(1)
        if run.rank == 0 and (run.step % cfg.log_every == 0 or run.step == run.total):
            log_line(run, step=run.step, epoch=run.step / run.per_epoch, split="train", loss=loss, lr=lrs(run.opt))
            progress(bar, run, loss, seen / train_time)
        if run.rank == 0 and (run.step % (cfg.eval_every or run.per_epoch) == 0 or run.step == run.total):
            evaluate_and_save(run, seen / train_time)
        if stop_after and run_steps >= stop_after and run.step < run.total:
            run.log(f"stopping after {run_steps} steps as asked (stop_after); continue with --resume")
            break
    bar.close()


def load_data(cfg, log):
    """The splits, the label maps (from train; dev and test are checked against them) and the pairs and
    contrastive tasks ({task: its Source})."""
    sources, splits = split_data(cfg)
    tasks = list(dict.fromkeys(t for s in sources for t in s.labels))
    check_splits(splits, sources, cfg)
    maps = label_maps(splits["train"], tasks)
    specs = pair_tasks(sources)
    for split in ("dev", "test"):
        check_labels(splits[split], maps, split)
    log("data: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()) + " | tasks: "
        + "; ".join([f"{t} ({len(labels)}: {', '.join(labels)})" for t, labels in maps.items()]
                    + [f"{t} ({spec.kind}, loss {spec.loss})" for t, spec in specs.items()]))
    return splits, maps, specs


def split_data(cfg):
    """(the Sources, their {"train", "dev", "test"} splits) as `cfg` sets them: what training, evaluate and the
    study all read, so a checkpoint's test split is the one it was scored on."""
    sources = []
    for i, s in enumerate(cfg.sources):
        unknown = set(s) - {f.name for f in fields(Source)}
        if unknown:
            raise UserError(f"sources[{i}]: unknown field(s) {sorted(unknown)}; a source has "
                            f"{[f.name for f in fields(Source)]}")
        sources.append(Source(**s))
    return sources, load_splits(sources, cfg.data_dir or None, cfg.split_seed, tuple(cfg.split_fractions))


def check_splits(splits, sources, cfg):
    """An empty dev or test split is an error before anything is written: best/ would be chosen on a score over no
    rows, and the test lines would say "n": 0. allow_empty_dev=True lets the dev split be empty (best/ = last)."""
    empty = [name for name in ("dev", "test") if not splits[name] and not (name == "dev" and cfg.allow_empty_dev)]
    if empty:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
        raise UserError(f"the {' and '.join(empty)} split of {[s.path for s in sources]} came out empty ({sizes} "
                        f"with split_fractions={cfg.split_fractions}): give more rows, raise its share (e.g. "
                        f"--split_fractions=[0.7,0.15,0.15]), give a Source with split='{empty[0]}'"
                        + (", or set --allow_empty_dev=true (best/ is then the last step)" if "dev" in empty else ""))


def build_model(cfg, maps, log, device):
    encoder = SentenceEncoder.from_pretrained(cfg.model, device=device)
    if cfg.max_seq_length:
        encoder.max_seq_length = cfg.max_seq_length
    model = MultiTaskModel(encoder, maps, head=cfg.head, dropout=cfg.dropout)
    if cfg.init_from:
        log(init_from(model, cfg.init_from))
    return model.compile() if cfg.compile else model


def init_from(model, path):
    """Copy a trained model's encoder, and each head whose task has the same labels, into `model`."""
    src = MultiTaskModel.from_checkpoint(path)
    same = [t for t in model.tasks if src.tasks.get(t) == model.tasks[t]]
    state = {k: v for k, v in src.state_dict().items() if k.startswith("bert.") or k.split(".")[1] in same}
    missing, _ = model.load_state_dict(state, strict=False)
    assert all(k.startswith("heads.") for k in missing), missing
    return f"initialised from {path}: encoder and heads {same or 'none'}"


def lrs(opt):
    return {g.get("name", str(i)): g["lr"] for i, g in enumerate(opt.param_groups)}


def log_line(run, **row):
    run.metrics.write(json.dumps(row) + "\n")
    run.metrics.flush()


def quiet(*args, **kwargs):
    pass


def progress(bar, run, loss, rate):
    """Every log_every steps: on a terminal, the tqdm bar's loss, lr and speed; in a log file or CI, a plain line."""
    lr = max(lrs(run.opt).values())
    if not bar.disable:
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{rate:.0f}")
    else:
        print(f"step {run.step}/{run.total}  loss {loss:.4f}  lr {lr:.2e}  {rate:.0f} samples/s", file=sys.stderr,
              flush=True)


def parse_overrides(cfg_dict, args):
    """--key=value pairs onto a config dict; values parse as JSON when they can (numbers, true, lists)."""
    known = {f.name for f in fields(TrainConfig)}
    for a in args:
        if not a.startswith("--") or "=" not in a:
            raise UserError(f"override {a!r} must look like --key=value")
        key, value = a[2:].split("=", 1)
        key = key.replace("-", "_")
        if key not in known:
            raise UserError(f"unknown setting {key!r}; known: {', '.join(sorted(known))}")
        try:
            cfg_dict[key] = json.loads(value)
        except json.JSONDecodeError:
            cfg_dict[key] = value
    return cfg_dict


def load_config(path, overrides=()):
    """TrainConfig from a JSON file plus --key=value overrides; every error names the file."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: an editor's byte-order mark is not an error
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON at line {e.lineno} column {e.colno} ({e.msg}); a training config "
                        f"is one JSON object, see examples/train_multidomain.json") from None
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    if not isinstance(d, dict):
        raise UserError(f"{path}: holds a JSON {type(d).__name__}; a training config is one JSON object")
    unknown = set(d) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise UserError(f"{path}: unknown setting(s) {sorted(unknown)}")
    d = parse_overrides(d, overrides)
    try:
        return TrainConfig(**d)
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
