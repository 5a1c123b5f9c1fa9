"""Training speed: minimt's training step vs the loop a transformers user writes; heads-only with the embedding cache.

    cd tests/bench && ../../.venv-dev/bin/python bench_train.py [--quick]    (--quick: tiny run, no file)

Data: the reviews of examples/train_multidomain.json (labels: domain, sentiment), split as `minimt train` does; batches
of plan_epoch (joint, seed 0), so every contender sees the same texts in the same order, cut at 128 tokens and padded
to the longest of their batch. Writes the "train" part of tests/bench/results.json and the README's tables. On a shared 2-core machine, timings can be disturbed.

T1, full fine-tuning, samples/s: all-MiniLM-L6-v2 + a linear head per task, batch 32, one AdamW step per batch
(lr 2e-5 constant, weight decay 0.01, grad-norm clip 1.0, dropout on):
  minimt                train.py's own train_step (MultiTaskModel on packed batches, task_loss, clip, fused AdamW)
                        with build_optimizer's groups and lr_at's rate.
  minimt, compiled      the same with TrainConfig(compile=True): MultiTaskModel.compile, the encoder's padded
                        forward and backward through torch.compile. Its first step compiles, outside the timing
                        (compile_s: that step's time less a timed step's).
  HF loop               AutoModel (SDPA) + mean pooling + L2 norm (as MultiTaskModel.forward) + Dropout, Linear per
                        task; AutoTokenizer; AdamW(model.parameters()): the loop a typical user writes.
  Warm-up steps, then rounds in which each contender runs the same few batches in turn (a slow moment of the machine
  hits all alike); medians of the rounds. Again under bf16 autocast, minimt and HF only, with fewer steps (a
  bf16 step is slow on a CPU without bf16 matmul units). The last step's loss shows that the contenders train alike.
T2, heads-only (backbone frozen, TrainConfig(freeze=["backbone"])): one epoch over a fixed 2,000-text subset of train
  with the EmbeddingCache (its one-off build timed apart) and without it (the frozen encoder runs every batch).
"""
import json
import random
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from transformers import AutoModel, AutoTokenizer

from common import MINILM, MTC as COMPILED, ROOT, cpu_name, save_results, write_readme  # TrainConfig(compile=True)
from minimt.data import Source, encode_labels, label_maps, load_splits, plan_epoch
from minimt.encoder import SentenceEncoder
from minimt.multitask import EmbeddingCache, MultiTaskModel
from minimt.train import Run, TrainConfig, build_optimizer, lr_at, task_loss, train_step

QUICK = "--quick" in sys.argv
# T1: (warm-up steps, rounds, steps per round). A bf16 step takes ~70 s on this CPU: no warm-up there, since first-call
# costs (allocations, kernel choice: well under a second) are lost in it; one round of one step each keeps the row.
PLAN = {"fp32": (1, 1, 1), "bf16": (0, 1, 1)} if QUICK else {"fp32": (1, 3, 3), "bf16": (0, 1, 1)}
# T2: subset size, epochs without the cache (~1 min each here), epochs with it (well under a second)
T2_N, T2_OFF, T2_ON = (128, 1, 1) if QUICK else (2000, 1, 3)
CFG = TrainConfig(lr=2e-5, weight_decay=0.01, clip=1.0, batch_size=32, max_seq_length=128, warmup=0.0,
                  schedule="constant")


def minimt_model(maps):
    torch.manual_seed(0)  # the same head initialisation for every contender (the HF heads copy it)
    enc = SentenceEncoder.from_pretrained(MINILM)
    enc.max_seq_length = CFG.max_seq_length
    return MultiTaskModel(enc, maps, head=CFG.head, dropout=CFG.dropout)


def t1_data():
    """The training split of examples/train_multidomain.json and its label maps: what T1 and T2 train on."""
    sources = [Source(**s) for s in json.loads((ROOT / "examples" / "train_multidomain.json").read_text())["sources"]]
    train = load_splits(sources)["train"]
    return train, label_maps(train, list(dict.fromkeys(t for s in sources for t in s.labels)))


def t1_batches(train, maps, n):
    """T1's first n batches (plan_epoch, joint, seed 0): every contender trains on the same texts in this order."""
    plan = plan_epoch(train, list(maps), CFG.batch_size, "joint", CFG.seed, 0)[:n]
    return [[train[i] for i in idx] for _, idx in plan]


def update(loss, params, opt):
    """backward, clip, AdamW step, zero_grad: the end of every step here, as in train.py."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, CFG.clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def minimt_step(model, opt, examples, maps, cfg):
    """One step of train.py's loop (one process, grad_accum 1, joint mixing): its lr, then its train_step."""
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * lr_at(0, 1, cfg.warmup, cfg.schedule)
    return train_step(Run(cfg, model, opt, maps), [(None, examples)])


def hf_model(mt):
    heads = nn.ModuleDict({t: nn.Sequential(nn.Dropout(CFG.dropout), nn.Linear(384, len(labels)))
                           for t, labels in mt.tasks.items()})
    heads.load_state_dict({k.replace(".out.", ".1."): v for k, v in mt.heads.state_dict().items()})  # same init
    return nn.ModuleDict({"bert": AutoModel.from_pretrained(str(MINILM), attn_implementation="sdpa"), "heads": heads})


def hf_step(m, tok, opt, examples, autocast, tasks):
    m.train()
    enc = tok([ex.text for ex in examples], truncation=True, max_length=CFG.max_seq_length, padding=True,
              return_tensors="pt")
    labels = {t: torch.tensor([names.index(ex.labels[t]) for ex in examples]) for t, names in tasks.items()}
    with autocast:
        hidden = m["bert"](**enc).last_hidden_state                              # (B, T, H)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)           # (B, T, 1)
        emb = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)
        loss = sum(F.cross_entropy(h(emb).float(), labels[t]) for t, h in m["heads"].items())
    return update(loss, list(m.parameters()), opt)


def t1(train, maps, precision):
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    warm, rounds, per = PLAN[precision]
    batches = t1_batches(train, maps, warm + rounds * per)
    mt = minimt_model(maps)
    mt_opt = build_optimizer(mt, CFG)  # train.py's optimizer: AdamW over freeze.param_groups
    mtc = minimt_model(maps).compile()  # what TrainConfig(compile=True) builds
    mtc_opt = build_optimizer(mtc, CFG)
    hf, tok = hf_model(mt), AutoTokenizer.from_pretrained(str(MINILM))
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=CFG.lr, weight_decay=CFG.weight_decay)
    cfg = TrainConfig(**{**CFG.__dict__, "bf16": precision == "bf16"})
    steps = {"minimt": lambda b: minimt_step(mt, mt_opt, b, maps, cfg),
             COMPILED: lambda b: minimt_step(mtc, mtc_opt, b, maps, cfg),
             "HF loop": lambda b: hf_step(hf, tok, hf_opt, b, autocast, maps)}
    t0 = time.perf_counter()
    steps[COMPILED](batches[0])  # the compile (forward and backward graphs), apart from the timing
    first_step = time.perf_counter() - t0
    for i, b in enumerate(batches[:warm]):  # first calls pay for allocations and kernel selection
        for name, step in steps.items():
            if i > 0 or name != COMPILED:  # (the compiled step has had batch 0 already)
                step(b)
    names, rates, loss = list(steps), {n: [] for n in steps}, {}
    for r in range(rounds):
        chunk = batches[warm + r * per:warm + (r + 1) * per]
        for name in names[r % len(names):] + names[:r % len(names)]:  # each round starts with the next contender
            t0 = time.perf_counter()
            loss[name] = [steps[name](b) for b in chunk][-1]
            rates[name].append(sum(map(len, chunk)) / (time.perf_counter() - t0))
    assert mtc.compiled.fn is not None, "the compiled contender fell back to eager"
    med = {n: statistics.median(v) for n, v in rates.items()}
    compiled = {"compile_s": first_step - CFG.batch_size / med[COMPILED], "warmup_steps": max(warm, 1)}
    return [{"workload": "T1", "contender": n, "precision": precision, "samples_per_s": med[n],
             "ratio_vs_hf": med[n] / med["HF loop"], "final_loss": loss[n], "warmup_steps": warm,
             "timed_steps": rounds * per, "rates": rates[n], **(compiled if n == COMPILED else {})} for n in steps]


def seconds(s):
    return "—" if s is None else f"{s:.0f} s"


def heads_epoch(model, opt, subset, plan, maps, cache):
    """One epoch of train.py's loop with the backbone frozen; vectors from the cache when there is one."""
    t0 = time.perf_counter()
    for _, idx in plan:
        examples = [subset[i] for i in idx]
        if cache is not None:
            pooled = cache(examples)
        else:  # forward sees the frozen backbone and runs it without autograd
            pooled = model(model.tokenizer.encode([ex.text for ex in examples]))
        update(task_loss(model.classify(pooled), encode_labels(examples, maps), None, {}),
               [p for g in opt.param_groups for p in g["params"]], opt)
    return time.perf_counter() - t0


def t2(train, maps):
    subset = [train[i] for i in sorted(random.Random(0).sample(range(len(train)), min(T2_N, len(train))))]
    cfg = TrainConfig(**{**CFG.__dict__, "freeze": ["backbone"], "cache_embeddings": True, "lr": 1e-3})
    model = minimt_model(maps)
    opt = build_optimizer(model, cfg)  # freeze(model, "backbone"), then AdamW over the heads' groups
    model.train()
    plan = plan_epoch(subset, list(maps), cfg.batch_size, "joint", cfg.seed, 0)
    heads_epoch(model, opt, subset, plan[:2], maps, None)  # warm-up
    t0 = time.perf_counter()
    cache = EmbeddingCache(model, [ex.text for ex in subset])  # as train.py builds it
    build = time.perf_counter() - t0
    off = [heads_epoch(model, opt, subset, plan, maps, None) for _ in range(T2_OFF)]
    on = [heads_epoch(model, opt, subset, plan, maps, cache) for _ in range(T2_ON)]
    return [{"workload": "T2", "contender": "heads-only, encoder every batch", "n": len(subset),
             "epoch_s": statistics.median(off), "times_s": off},
            {"workload": "T2", "contender": "heads-only, EmbeddingCache", "n": len(subset),
             "epoch_s": statistics.median(on), "cache_build_s": build,
             "speedup": statistics.median(off) / statistics.median(on), "times_s": on}]


def main():
    train, maps = t1_data()
    print(f"train {len(train)} texts; " + "; ".join(f"{t}: {len(v)} classes" for t, v in maps.items())
          + f"; torch threads {torch.get_num_threads()}, {cpu_name()}")
    rows = t1(train, maps, "fp32") + t1(train, maps, "bf16") + t2(train, maps)
    print(f"{'T1 full fine-tuning, batch 32':<28} {'prec':>5} {'steps':>5} {'samples/s':>10} {'vs HF':>6} "
          f"{'last loss':>9}")
    for r in rows[:-2]:
        print(f"{r['contender']:<28} {r['precision']:>5} {r['timed_steps']:>5} {r['samples_per_s']:10.2f} "
              f"{r['ratio_vs_hf']:5.2f}x {r['final_loss']:9.4f}")
    off, on = rows[-2:]
    print(f"T2 heads-only, {on['n']} texts, batch 32: epoch {off['epoch_s']:.2f} s without the cache, "
          f"{on['epoch_s']:.3f} s with it (+ {on['cache_build_s']:.2f} s one-off build): {on['speedup']:.0f}x")
    if not QUICK:  # a toy run must not overwrite the real numbers
        table = [f"**T1: full fine-tuning** (MiniLM + {len(maps)} linear heads, batch 32, texts cut at 128 tokens, "
                 f"AdamW; the HF loop is transformers' BertModel with SDPA and the same heads)", "",
                 "| contender | precision | timed steps | samples/s | vs HF loop | last loss | compile |",
                 "|---|---|---|---|---|---|---|"]
        table += [f"| {r['contender']} | {r['precision']} | {r['timed_steps']} | {r['samples_per_s']:.2f} | "
                  f"{r['ratio_vs_hf']:.2f}x | {r['final_loss']:.4f} | {seconds(r.get('compile_s'))} |" for r in rows[:-2]]
        table += ["", f"**T2: heads-only training** ({on['n']:,} texts, backbone frozen): one epoch "
                      f"{off['epoch_s']:.2f} s with the encoder run every batch, {on['epoch_s']:.3f} s on the "
                      f"EmbeddingCache (built once in {on['cache_build_s']:.1f} s): {on['speedup']:.0f}x."]
        fp32 = {r["contender"]: r for r in rows if r.get("precision") == "fp32"}
        save_results("train", {"cpu": cpu_name(), "threads": torch.get_num_threads(),
                               "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                               "rows": rows, "t1_fp32_ratio": fp32["minimt"]["ratio_vs_hf"],
                               "t2_speedup": on["speedup"], "table": table})
        write_readme()


if __name__ == "__main__":
    main()
