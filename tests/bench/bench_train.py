"""Training speed: minimt's training step vs the loop a transformers user writes, and the embedding cache.

    .venv-dev/bin/python tests/bench/bench_train.py [--quick]    (from the repo root; --quick: tiny run, no file)

Data: the sources of examples/train_multidomain.json (reviews with two labels each: domain and sentiment), split as
`minimt train` splits them; batches come from plan_epoch (joint mixing, seed 0), so every contender gets the same
texts in the same order. Texts are cut at 128 tokens and padded to the longest text of their batch.

T1, full fine-tuning (samples/s): all-MiniLM-L6-v2 + one linear head per task, batch 32, one AdamW step per batch
(lr 2e-5 constant, weight decay 0.01, grad-norm clip 1.0, dropout on):
  minimt               MultiTaskModel, build_optimizer, collate, task_loss. train.py has no single-step function, so
                       minimt_step repeats the lines of its loop (lr_at, embed, classify, backward, clip, step).
  minimt + fused AdamW the same model and param groups (freeze.param_groups), torch.optim.AdamW(fused=True).
  HF loop              transformers AutoModel (SDPA) + mean pooling + L2 norm (as MultiTaskModel.embed) + Dropout and
                       Linear per task, AutoTokenizer, AdamW over model.parameters(): what a typical user writes.
  Warm-up steps first, then REPEATS rounds; in each round every contender runs the same few batches in turn, so a
  slow moment of the machine hits all alike. Median of the rounds. Again under bf16 autocast (minimt and HF loop
  only, fewer steps: this AVX2-only CPU has no bf16 matmul units). The last step's loss shows the runs agree.
T2, heads-only training (backbone frozen by freeze controls, as TrainConfig(freeze=["backbone"])): seconds for one
  epoch over a fixed 2,000-text subset of train, with the EmbeddingCache (one-off build timed on its own) and without
  it (the frozen encoder runs on every batch, under inference_mode).
Writes tests/bench/train.json. Timings on a shared 2-core machine: another process can disturb them.
"""
import json, platform, random, statistics, sys, time
from datetime import date
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from transformers import AutoModel, AutoTokenizer

from minimt.data import Source, collate, encode_labels, label_maps, load_splits, plan_epoch
from minimt.encoder import SentenceEncoder
from minimt.freeze import param_groups
from minimt.multitask import EmbeddingCache, MultiTaskModel
from minimt.train import TrainConfig, build_optimizer, lr_at, task_loss

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MINILM = ROOT / "weights" / "all-MiniLM-L6-v2"
QUICK = "--quick" in sys.argv
# (warm-up steps, rounds, steps per round) per precision; T2 subset size
PLAN = {"fp32": (1, 1, 1), "bf16": (1, 1, 1)} if QUICK else {"fp32": (2, 3, 4), "bf16": (1, 1, 2)}
T2_N, T2_REPEATS = (128, 1) if QUICK else (2000, 2)
CFG = TrainConfig(lr=2e-5, weight_decay=0.01, clip=1.0, batch_size=32, max_seq_length=128, warmup=0.0,
                  schedule="constant")


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def minimt_model(maps, seed=0):
    torch.manual_seed(seed)  # same head initialisation for every contender (HF heads copy these)
    enc = SentenceEncoder.from_pretrained(MINILM)
    enc.max_seq_length = CFG.max_seq_length
    return MultiTaskModel(enc, maps, head=CFG.head, dropout=CFG.dropout)


def minimt_step(model, opt, examples, maps, autocast):
    """One step of train.py's loop (single process, grad_accum 1, joint task mixing), line for line."""
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * lr_at(0, 1, CFG.warmup, CFG.schedule)
    model.train()
    batch = collate(examples, model.tokenizer, maps)
    with autocast:
        pooled = model.embed(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        loss = task_loss(model.classify(pooled), batch["labels"], None, CFG.task_weights)
    loss.backward()
    trainable = [p for g in opt.param_groups for p in g["params"]]
    torch.nn.utils.clip_grad_norm_(trainable, CFG.clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


class HFMultiTask(nn.Module):
    def __init__(self, mt):
        super().__init__()
        self.bert = AutoModel.from_pretrained(str(MINILM), attn_implementation="sdpa")
        self.heads = nn.ModuleDict({t: nn.Sequential(nn.Dropout(CFG.dropout), nn.Linear(384, len(labels)))
                                    for t, labels in mt.tasks.items()})
        for t, h in self.heads.items():  # start from minimt's heads, so the losses can be compared
            h[1].load_state_dict(mt.heads[t].out.state_dict())
        self.index = {t: {name: i for i, name in enumerate(labels)} for t, labels in mt.tasks.items()}


def hf_step(m, tok, opt, examples, autocast):
    m.train()
    enc = tok([ex.text for ex in examples], truncation=True, max_length=CFG.max_seq_length, padding=True,
              return_tensors="pt")
    labels = {t: torch.tensor([ix[ex.labels[t]] for ex in examples]) for t, ix in m.index.items()}
    with autocast:
        hidden = m.bert(**enc).last_hidden_state                               # (B, T, H)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)           # (B, T, 1)
        emb = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)
        loss = sum(F.cross_entropy(h(emb).float(), labels[t]) for t, h in m.heads.items())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), CFG.clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def t1(train, maps, precision):
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    warm, rounds, per = PLAN[precision]
    plan = plan_epoch(train, list(maps), CFG.batch_size, "joint", CFG.seed, 0)[:warm + rounds * per]
    batches = [[train[i] for i in idx] for _, idx in plan]
    mt = minimt_model(maps)
    mt_opt = build_optimizer(mt, CFG, 0)
    hf, tok = HFMultiTask(mt), AutoTokenizer.from_pretrained(str(MINILM))
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=CFG.lr, weight_decay=CFG.weight_decay)
    steps = {"minimt": lambda b: minimt_step(mt, mt_opt, b, maps, autocast),
             "HF loop": lambda b: hf_step(hf, tok, hf_opt, b, autocast)}
    if precision == "fp32":
        fu = minimt_model(maps)
        fu_opt = torch.optim.AdamW(param_groups(fu, CFG.lr, CFG.weight_decay), lr=CFG.lr, fused=True)
        for g in fu_opt.param_groups:
            g.setdefault("base_lr", g["lr"])
        steps["minimt + fused AdamW"] = lambda b: minimt_step(fu, fu_opt, b, maps, autocast)
    for b in batches[:warm]:
        for step in steps.values():
            step(b)
    rates, loss = {n: [] for n in steps}, {}
    for r in range(rounds):
        chunk = batches[warm + r * per:warm + (r + 1) * per]
        for name, step in steps.items():
            t0 = time.perf_counter()
            loss[name] = [step(b) for b in chunk][-1]
            rates[name].append(sum(map(len, chunk)) / (time.perf_counter() - t0))
    hf_rate = statistics.median(rates["HF loop"])
    return [{"workload": "T1", "contender": n, "precision": precision, "samples_per_s": statistics.median(rates[n]),
             "ratio_vs_hf": statistics.median(rates[n]) / hf_rate, "final_loss": loss[n], "warmup_steps": warm,
             "timed_steps": rounds * per, "rates": rates[n]} for n in steps]


def heads_epoch(model, opt, subset, plan, maps, cache):
    """One epoch of train.py's loop with the backbone frozen, reading vectors from the cache if there is one."""
    t0 = time.perf_counter()
    for _, idx in plan:
        examples = [subset[i] for i in idx]
        labels = encode_labels(examples, maps)
        if cache is not None:
            pooled = cache(examples)
        else:
            batch = model.tokenizer([ex.text for ex in examples])
            pooled = model.embed(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        task_loss(model.classify(pooled), labels, None, {}).backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], CFG.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def t2(train, maps):
    subset = [train[i] for i in sorted(random.Random(0).sample(range(len(train)), min(T2_N, len(train))))]
    cfg = TrainConfig(**{**CFG.__dict__, "freeze": ["backbone"], "cache_embeddings": True, "lr": 1e-3})
    model = minimt_model(maps)
    opt = build_optimizer(model, cfg, 0)  # freezes the backbone, groups for the heads only
    model.train()
    plan = plan_epoch(subset, list(maps), cfg.batch_size, "joint", cfg.seed, 0)
    t0 = time.perf_counter()
    cache = EmbeddingCache(model, [ex.text for ex in subset], cfg.eval_batch_size)
    build = time.perf_counter() - t0
    heads_epoch(model, opt, subset, plan[:2], maps, None)  # warm-up
    times = {"no cache": [], "cache": []}
    for _ in range(T2_REPEATS):
        times["no cache"].append(heads_epoch(model, opt, subset, plan, maps, None))
        times["cache"].append(heads_epoch(model, opt, subset, plan, maps, cache))
    off, on = statistics.median(times["no cache"]), statistics.median(times["cache"])
    return [{"workload": "T2", "contender": "heads-only, encoder every batch", "n": len(subset), "epoch_s": off,
             "times_s": times["no cache"]},
            {"workload": "T2", "contender": "heads-only, EmbeddingCache", "n": len(subset), "epoch_s": on,
             "cache_build_s": build, "speedup": off / on, "times_s": times["cache"]}]


def main():
    cfg = json.loads((ROOT / "examples" / "train_multidomain.json").read_text())
    splits = load_splits([Source(**s) for s in cfg["sources"]])
    tasks = list(dict.fromkeys(t for s in cfg["sources"] for t in s["labels"]))
    train, maps = splits["train"], label_maps(splits["train"], tasks)
    print(f"train {len(train)} texts; " + "; ".join(f"{t}: {len(v)} classes" for t, v in maps.items())
          + f"; torch threads {torch.get_num_threads()}, {cpu_name()}")
    rows = t1(train, maps, "fp32") + t1(train, maps, "bf16") + t2(train, maps)
    print(f"{'T1 full fine-tuning, batch 32':<34} {'prec':>5} {'steps':>5} {'samples/s':>10} {'vs HF':>6} "
          f"{'last loss':>9}")
    for r in rows[:-2]:
        print(f"{r['contender']:<34} {r['precision']:>5} {r['timed_steps']:>5} {r['samples_per_s']:10.2f} "
              f"{r['ratio_vs_hf']:5.2f}x {r['final_loss']:9.4f}")
    off, on = rows[-2:]
    print(f"T2 heads-only, {on['n']} texts, batch 32: epoch {off['epoch_s']:.2f} s without cache, "
          f"{on['epoch_s']:.3f} s with it (+ {on['cache_build_s']:.2f} s one-off build): {on['speedup']:.0f}x")
    if QUICK:
        return
    result = {"date": date.today().isoformat(), "cpu": cpu_name(), "threads": torch.get_num_threads(),
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__}, "rows": rows}
    (HERE / "train.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
