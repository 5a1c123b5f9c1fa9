"""The multi-task training loop (Task 4): explicit, top to bottom, no framework and no callbacks.

    data (per-task labels) ─► plan_epoch: which examples, which task, in what order (pure, from seed and epoch)
    for each step:  lr_at(step) ─► micro-batches ─► Σ_t w_t · CE_t ─► backward ─► clip ─► AdamW step
    every eval_every steps and at the end: dev metrics ─► metrics.jsonl, best checkpoint; always: last checkpoint
    at the very end: test metrics and predictions.jsonl

Run: python -m minimt train CONFIG.json [--key=value ...]   (see examples/04_train.py and the README)
"""
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from minimt import checkpoint, distributed
from minimt.data import IGNORE, Source, check_labels, encode_labels, label_maps, load_splits, plan_epoch
from minimt.encoder import SentenceEncoder
from minimt.evaluate import evaluate
from minimt.freeze import freeze, open_units, param_groups, trainable_table, unfreeze_schedule
from minimt.multitask import EmbeddingCache, MultiTaskModel


@dataclass
class TrainConfig:
    sources: list = field(default_factory=list)  # minimt.data.Source fields, one dict per dataset file
    data_dir: str = ""               # "" = data/ (or $MINIMT_DATA), filled by `make data`
    split_seed: int = 0              # train/dev/test split of sources that have none
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
    bf16: bool = False               # bfloat16 autocast on CPU
    seed: int = 0
    eval_every: int = 0              # steps between dev evaluations; 0 = end of every epoch
    eval_batch_size: int = 64
    out_dir: str = "runs/train"
    resume: bool = False             # continue from out_dir/last exactly where it stopped
    stop_after: int = 0              # > 0: stop after this many steps of this run (to test --resume)

    def __post_init__(self):
        checks = {"mixing": ("joint", "round_robin", "proportional"), "schedule": ("linear", "cosine", "constant"),
                  "head": ("linear", "mlp")}
        for key, allowed in checks.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r} is not supported; use one of {list(allowed)}")
        if self.cache_embeddings and "backbone" not in self.freeze and "all" not in self.freeze:
            raise ValueError("cache_embeddings needs the backbone frozen: add \"backbone\" to freeze")
        if self.cache_embeddings and self.unfreeze_every:
            raise ValueError("cache_embeddings and unfreeze_every exclude each other: the backbone must stay frozen")


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
    `task` None (joint): every head contributes, even with no labelled row (as 0), so all take part every step.
    counts: labelled rows per task in the whole batch, when this process holds only a share of it (DDP)."""
    loss = 0.0
    for t in ([task] if task else logits):
        y = labels[t]
        n = (counts[t] if counts is not None else (y != IGNORE).sum()).clamp(min=1)
        loss = loss + weights.get(t, 1.0) * F.cross_entropy(logits[t].float(), y, ignore_index=IGNORE,
                                                            reduction="sum") / n
    return loss


def build_optimizer(model, cfg, step):
    """Freeze as configured, replay gradual unfreezing up to `step`, then one AdamW over the trainable groups."""
    head_lr = cfg.head_lr or None
    freeze(model, *cfg.freeze)
    if cfg.unfreeze_every:
        freeze(model, "backbone")  # ULMFiT: heads first, then one layer at a time from the top
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.layer_decay, head_lr)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, fused=True)  # one kernel per step, not ~10 per tensor
    if cfg.unfreeze_every:  # re-open in the same order as the run did, so optimizer groups line up on --resume
        for s in range(0, step + 1, cfg.unfreeze_every):
            open_units(model, opt, unfreeze_schedule(s, cfg.unfreeze_every, len(model.bert.layers)),
                       cfg.lr, cfg.weight_decay, cfg.layer_decay, head_lr)
    for g in opt.param_groups:
        g.setdefault("base_lr", g["lr"])
    return opt


def train(cfg: TrainConfig):
    rank, world = distributed.init()
    if world > 1 and cfg.resume:
        raise ValueError("resume with several processes is not supported yet (each rank's RNG would have to be "
                         "saved); resume with a single process")
    log = print if rank == 0 else quiet  # one process speaks, writes logs and checkpoints
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    sources = [Source(**s) for s in cfg.sources]
    tasks = list(dict.fromkeys(t for s in sources for t in s.labels))
    splits = load_splits(sources, cfg.data_dir or None, cfg.split_seed)
    maps = label_maps(splits["train"], tasks)
    for split in ("dev", "test"):
        check_labels(splits[split], maps, split)
    log("data: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()) + " | tasks: "
          + "; ".join(f"{t} ({len(labels)}: {', '.join(labels)})" for t, labels in maps.items()))

    encoder = SentenceEncoder.from_pretrained(cfg.model)
    if cfg.max_seq_length:
        encoder.max_seq_length = cfg.max_seq_length
    model = MultiTaskModel(encoder, maps, head=cfg.head, dropout=cfg.dropout)
    if cfg.init_from:
        log(checkpoint.init_from(model, cfg.init_from))
    if world > 1:
        torch.manual_seed(cfg.seed + rank)  # same initial weights everywhere, different dropout per rank

    train_set = splits["train"]
    steps_per_epoch = math.ceil(len(plan_epoch(train_set, tasks, cfg.batch_size, cfg.mixing, cfg.seed, 0,
                                               cfg.temperature)) / cfg.grad_accum)
    total = min(cfg.epochs * steps_per_epoch, cfg.max_steps or 10**12)
    eval_every = cfg.eval_every or steps_per_epoch
    step, best = 0, -1.0
    state = None
    if cfg.resume:
        state = checkpoint.load_train_state(out / "last")
        model.load_state_dict(checkpoint.load_tensors(out / "last"))
        step, best = state["step"], state["best"]
        torch.set_rng_state(state["rng"])
        log(f"resuming from {out / 'last'} at step {step}")
    opt = build_optimizer(model, cfg, step)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    log(trainable_table(model, opt.param_groups))
    cache = None
    if cfg.cache_embeddings:
        t = time.perf_counter()
        cache = EmbeddingCache(model, [ex.text for exs in splits.values() for ex in exs])
        log(f"embedding cache: {len(cache.row)} distinct texts encoded once in {time.perf_counter() - t:.1f}s")

    out.mkdir(parents=True, exist_ok=True)
    metrics_log = open(out / "metrics.jsonl", "a", encoding="utf-8") if rank == 0 else None
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16)
    run_steps, seen, train_time, plan_of = 0, 0, 0.0, None
    while step < total:
        t0 = time.perf_counter()
        epoch, in_epoch = divmod(step, steps_per_epoch)
        if plan_of != epoch:  # the epoch's batches: a pure function of (seed, epoch), so --resume finds its place
            plan, plan_of = plan_epoch(train_set, tasks, cfg.batch_size, cfg.mixing, cfg.seed, epoch,
                                       cfg.temperature), epoch
        micro = plan[in_epoch * cfg.grad_accum:(in_epoch + 1) * cfg.grad_accum]

        # 1) learning rate for this step, and gradual unfreezing's next layer if its step has come
        if cfg.unfreeze_every and step % cfg.unfreeze_every == 0:
            opened = open_units(model, opt, unfreeze_schedule(step, cfg.unfreeze_every, len(model.bert.layers)),
                                cfg.lr, cfg.weight_decay, cfg.layer_decay, cfg.head_lr or None)
            for g in opt.param_groups:
                g.setdefault("base_lr", g["lr"])
            if opened:
                log(f"step {step}: unfroze {', '.join(opened)}")
        factor = lr_at(step, total, cfg.warmup, cfg.schedule)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * factor

        # 2) forward and backward over the micro-batches; the loss is averaged over them
        model.train()
        for task, idx in micro:
            examples = [train_set[i] for i in idx[rank::world]]  # this rank's share of the batch
            labels = encode_labels(examples, maps)
            counts = distributed.all_sum(torch.stack([(labels[t] != IGNORE).sum() for t in maps]))
            if examples:
                with autocast:
                    if cache is not None:  # frozen backbone: the vectors are known, only the labels are needed
                        pooled = cache(examples)
                    else:
                        pooled = model(model.tokenizer.encode([ex.text for ex in examples]))
                    loss = task_loss(model.classify(pooled), labels, task, cfg.task_weights, dict(zip(maps, counts)))
                (loss / len(micro)).backward()
            seen += len(idx)
        trainable = [p for g in opt.param_groups for p in g["params"]]
        distributed.sync_gradients(trainable)  # several processes: every rank now holds the whole batch's gradient

        # 3) clip and update; frozen tensors are in no group, so weight decay never touches them
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step, run_steps = step + 1, run_steps + 1
        train_time += time.perf_counter() - t0
        if rank == 0:
            progress(step, total, loss.item())

        # 4) evaluate on dev, keep the best checkpoint (mean macro-F1 over tasks) and the last one
        if rank == 0 and (step % eval_every == 0 or step == total):
            res, _ = evaluate(model, splits["dev"], maps, "dev", cfg.eval_batch_size, cache, records=False)
            rate = seen / train_time  # training samples per second of training (evaluation not counted)
            lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(opt.param_groups)}
            for t, r in res.items():
                metrics_log.write(json.dumps({"step": step, "epoch": step / steps_per_epoch, "split": "dev", "task": t,
                                              **r, "lr": lrs, "samples_per_s": rate}) + "\n")
            metrics_log.flush()
            score = sum(r["macro_f1"] for r in res.values()) / len(res)
            print(f"\nstep {step}/{total}  dev " + "  ".join(f"{t}: acc {r['accuracy']:.3f} F1 {r['macro_f1']:.3f}"
                                                       for t, r in res.items()) + f"  ({rate:.0f} samples/s)")
            meta = {"train": asdict(cfg), "step": step, "dev": {t: {k: r[k] for k in ("accuracy", "macro_f1")}
                                                              for t, r in res.items()}}
            if score > best:
                best = score
                checkpoint.save(out / "best", model, meta)
            checkpoint.save(out / "last", model, meta, {"optimizer": opt.state_dict(), "rng": torch.get_rng_state(),
                                                        "step": step, "best": best})
        if cfg.stop_after and run_steps >= cfg.stop_after and step < total:
            log(f"stopping after {run_steps} steps as asked (stop_after); continue with --resume")
            if rank == 0:
                metrics_log.close()
            distributed.finish()
            return model

    if rank != 0:
        distributed.finish()
        return model

    # 5) the best checkpoint on the test split, with one prediction line per example and task
    best_model = checkpoint.load_model(out / "best")
    for split in ("dev", "test"):
        res, preds = evaluate(best_model, splits[split], maps, split, cfg.eval_batch_size)
        for t, r in res.items():
            metrics_log.write(json.dumps({"step": step, "epoch": step / steps_per_epoch, "split": split, "task": t, **r,
                                          "checkpoint": "best"}) + "\n")
            print(f"{split:4s} {t}: accuracy {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}  (n={r['n']})")
        with open(out / "predictions.jsonl", "a" if split == "test" else "w", encoding="utf-8") as f:
            f.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in preds)
    metrics_log.close()
    distributed.finish()
    return best_model


def quiet(*args, **kwargs):
    pass


def progress(step, total, loss):
    if sys.stderr.isatty():  # a live line for people; nothing in logs and CI
        print(f"\rstep {step}/{total}  loss {loss:.4f}", end="", file=sys.stderr, flush=True)


def parse_overrides(cfg_dict, args):
    """--key=value pairs onto a config dict; values parse as JSON when they can (numbers, true, lists)."""
    known = {f.name for f in fields(TrainConfig)}
    for a in args:
        if not a.startswith("--") or "=" not in a:
            raise ValueError(f"override {a!r} must look like --key=value")
        key, value = a[2:].split("=", 1)
        key = key.replace("-", "_")
        if key not in known:
            raise ValueError(f"unknown setting {key!r}; known: {', '.join(sorted(known))}")
        try:
            cfg_dict[key] = json.loads(value)
        except json.JSONDecodeError:
            cfg_dict[key] = value
    return cfg_dict


def load_config(path, overrides=()):
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    unknown = set(d) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {sorted(unknown)}")
    d = parse_overrides(d, overrides)
    for f in fields(TrainConfig):  # type check: a string where a number belongs fails here, not mid-run
        if f.name in d and f.type in (int, float, bool) and not isinstance(d[f.name], (int, float, bool)):
            raise ValueError(f"setting {f.name}={d[f.name]!r} must be a {f.type.__name__}")
    return TrainConfig(**d)
