"""The study: what each way of freezing costs and buys on real reviews, and whether tasks on the embedding itself
(pairs, contrastive) keep the encoder a good sentence encoder while the heads learn.

    make study    (or: .venv/bin/python examples/05_study.py [row ... | --missing])   2-4 hours on 2 cores

A stopped study goes on with `--missing`: the rows results.json does not hold yet. Each row records the CPU it ran
on, and the tables name it where rows ran on different ones (wall time depends on it; the metrics barely do).

Every freezing row trains from the pretrained all-MiniLM-L6-v2 with the same data, seed, steps and learning rates,
and differs only in what is frozen. Measured: test accuracy and macro-F1 per task, trainable parameters, wall time,
training samples/s, and the encoder's STS benchmark Spearman after training (82.03 before: how much general
sentence similarity each mode gives up). The embedding rows add STSb-train pairs or AG News title -> description
pairs to the same reviews (or train on STSb alone), and report the same numbers plus retrieval on held-out AG News.
The seeded rows repeat one comparison over three seeds. Results go to runs/study/results.json, docs/study.md's
tables and the figure, examples/study.png (accuracy per task and STSb after, against trainable parameters).
"""
import json
import sys
from collections import Counter
import time
from pathlib import Path

import torch

from minimt import SentenceEncoder, cos_sim
from minimt.devices import cpu_name
from minimt.io import files
from minimt.freeze import freeze, unfreeze
from minimt.tools.plot import plot_study
from minimt.evaluate import evaluate_sts
from minimt.train import TrainConfig, load_config, split_data, train

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "study"
FIGURE = ROOT / "examples" / "study.png"
BASE = "examples/train_multidomain.json"
STEPS = 150  # 4,800 training reviews (60% of one epoch): every row gets the same budget
COMMON = {"max_steps": STEPS, "eval_every": STEPS, "epochs": 1}

# row name -> (settings over BASE, what the row shows)
ROWS = {
    "zero_shot": (None, "everything frozen: no training; each text gets the label whose name embeds closest"),
    "heads_cached": ({"freeze": ["backbone"], "cache_embeddings": True, "epochs": 20, "max_steps": 0,
                      "eval_every": 0, "head_lr": 1e-2},
                     "backbone frozen, heads trained on cached embeddings (20 epochs: each costs almost nothing)"),
    "top2": ({"freeze": ["top:2"]}, "top 2 layers + heads train, the rest frozen"),
    "full": ({}, "full fine-tuning"),
    "full_llrd": ({"layer_decay": 0.8}, "full fine-tuning, layer-wise lr decay 0.8"),
    "gradual": ({"unfreeze_every": 20}, "gradual unfreezing: heads, then one layer from the top every 20 steps"),
    "continual": (None, "domain first; then domain head frozen, sentiment trained with the backbone open"),
}
# the zero-shot row compares each text with these sentences, one per label
PROMPTS = {"domain": {"airline": "a review of an airline flight", "books": "a review of a book",
                      "dvd": "a review of a movie on dvd", "electronics": "a review of an electronic gadget",
                      "kitchen": "a review of a kitchen appliance"},
           "sentiment": {"negative": "a negative review", "positive": "a positive review"}}
# two more set-ups: disjoint datasets (SST-2 sentiment + AG News topic) and women's clothing reviews
SST2 = {"path": "sst2/train.tsv", "text": "sentence", "labels": {"sentiment": "label"}, "limit": 6000, "quoting": False,
        "label_names": {"sentiment": {"0": "negative", "1": "positive"}}}
AGNEWS = {"path": "ag_news/train_sample_10k_alps.tsv", "text": "text", "labels": {"topic": "topic"},
          "columns": ["text", "topic"], "limit": 6000, "quoting": False}
CLOTHING = {"path": "womens_clothing_reviews/womens_clothing_ecommerce_reviews.csv", "text": "Review Text",
            "labels": {"department": "Department Name", "sentiment": "Rating"}, "skip_empty_text": True,
            "label_names": {"sentiment": {"1": "negative", "2": "negative", "3": "neutral", "4": "positive",
                                          "5": "positive"}}, "limit": 8000}
# tasks on the embedding itself (minimt/objectives.py): can they keep the encoder a good sentence encoder?
STS_COLUMNS = ["genre", "file", "year", "id", "score", "sentence1", "sentence2"]
STSB = [{"path": f"stsb/sts-{split}.csv", "format": "tsv", "quoting": False, "columns": STS_COLUMNS,
         "trailing_fields": True, "text": "sentence1", "labels": {}, "kind": "pairs", "task": "stsb",
         "text_b": "sentence2", "score": "score", "split": split} for split in ("train", "dev", "test")]
AG_PAIRS = {"path": "ag_news/test.csv", "columns": ["class", "title", "description"], "text": "title", "labels": {},
            "kind": "contrastive", "task": "ag_retrieval", "text_b": "description"}
REVIEWS = json.loads((ROOT / BASE).read_text())["sources"]
STSB_RECIPE = {"sources": STSB, "epochs": 4, "max_steps": 0, "eval_every": 0, "batch_size": 16, "lr": 2e-5}
EMBEDDING = {
    "joint_stsb": ({"sources": REVIEWS + STSB, "batch_size": 56},
                   "domain + polarity + STSb-train pairs (CoSENT), joint batches of 56 (~32 reviews + ~24 pairs)"),
    # CoSENT's logits are cosines x 20, so its gradients are ~20x a cross-entropy's: weights below 1 rebalance
    "joint_stsb_w02": ({"sources": REVIEWS + STSB, "batch_size": 56, "task_weights": {"stsb": 0.2}},
                       "the same, the pairs' loss weighted 0.2"),
    "joint_stsb_w005": ({"sources": REVIEWS + STSB, "batch_size": 56, "task_weights": {"stsb": 0.05}},
                        "the same, the pairs' loss weighted 0.05 (= 1 / CoSENT's scale)"),
    "joint_stsb_w005_gradual": ({"sources": REVIEWS + STSB, "batch_size": 56, "task_weights": {"stsb": 0.05},
                                 "unfreeze_every": 20},
                                "the same at 0.05, with gradual unfreezing (one layer from the top every 20 steps)"),
    "joint_agnews": ({"sources": REVIEWS + [AG_PAIRS], "batch_size": 56},
                     "domain + polarity + AG News title -> description (in-batch negatives), joint batches of 56"),
    "agnews_contrastive": ({"sources": [AG_PAIRS]}, "AG News title -> description alone (in-batch negatives, batches "
                                                     "of 32)"),
    "stsb_alone": (STSB_RECIPE, "STSb-train pairs alone (CoSENT), 4 epochs of 16 pairs, lr 2e-5"),
    "stsb_top2": ({**STSB_RECIPE, "freeze": ["top:2"]}, "the same, only the top 2 layers train"),
}
OTHER = {
    "heads_uncached": ({"freeze": ["backbone"], "max_steps": 20, "eval_every": 20, "head_lr": 1e-2},
                       "backbone frozen, heads trained through the encoder (no cache; 20 steps, for the speed-up)"),
    "disjoint_round_robin": ({"sources": [SST2, AGNEWS], "mixing": "round_robin"}, "SST-2 + AG News, round-robin"),
    "disjoint_proportional": ({"sources": [SST2, AGNEWS], "mixing": "proportional"},
                              "SST-2 + AG News, proportional sampling (T = 1)"),
    "sst2_alone": ({"sources": [SST2]}, "SST-2 sentiment alone"),
    "agnews_alone": ({"sources": [AGNEWS]}, "AG News topic alone"),
    "clothing": ({"sources": [CLOTHING]}, "women's clothing: department + rating (1-2 / 3 / 4-5) on the same text"),
}


EMBEDDING["untrained"] = (None, "no training: all-MiniLM-L6-v2 as it comes (the bar for the rows above)")
# One seed cannot separate rows 0.01 apart (1,000 test reviews: a standard error of ~0.01 on an accuracy near 0.87).
# These rows train the row they name once per seed (the seed sets the heads' initialisation, the batch order and
# the dropout masks; the split stays fixed) and report each seed and the mean.
SEEDS = (0, 1, 2)
SEEDED = {"seeds_full": ("full", "full fine-tuning"),
          "seeds_joint_stsb_w005": ("joint_stsb_w005", "domain + polarity + STSb-train pairs (CoSENT) weighted 0.05")}
ALL = ROWS | EMBEDDING | OTHER | {name: (None, what) for name, (_, what) in SEEDED.items()}


def command(overrides):
    def arg(k, v):
        if isinstance(v, str):
            return f"--{k}={v}"
        text = json.dumps(v)
        return f"--{k}='{text}'" if isinstance(v, (list, dict)) else f"--{k}={text}"
    return f"python -m minimt train {BASE} " + " ".join(arg(k, v) for k, v in overrides.items())


def trainable_counts(model, cfg):
    """(parameters trainable at the first step, at the last): they differ only under gradual unfreezing."""
    def count():
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    freeze(model, *cfg.freeze)
    end = count()
    if cfg.unfreeze_every:
        freeze(model, "backbone")
    start = count()
    unfreeze(model, "all")
    return start, end


def sts_after(model):
    return evaluate_sts(SentenceEncoder(model.bert, model.tokenizer))["spearman"]


def test_metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = ("accuracy", "macro_f1", "spearman", "pearson", "recall_at_1", "mrr")
    return {r["task"]: {k: r[k] for k in keys if k in r}
            for r in rows if r["split"] == "test" and r.get("checkpoint") == "best"}


def run(name, overrides):
    cfg = load_config(ROOT / BASE, [])
    settings = {**COMMON, **overrides, "out_dir": str(OUT / name), "overwrite": True}
    cfg = TrainConfig(**{**cfg.__dict__, **settings})
    t0 = time.perf_counter()
    model = train(cfg)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (OUT / name / "metrics.jsonl").read_text().splitlines()]
    rate = [r["samples_per_s"] for r in rows if "samples_per_s" in r][-1]
    start, end = trainable_counts(model, cfg)
    return {"test": test_metrics(OUT / name), "trainable": end, "trainable_start": start, "wall_s": wall,
            "samples_per_s": rate, "sts_spearman": sts_after(model),
            "command": command({k: v for k, v in settings.items() if k not in ("out_dir", "overwrite")})}


def zero_shot():
    t0 = time.perf_counter()
    cfg = load_config(ROOT / BASE, [])
    test = split_data(cfg)[1]["test"]
    enc = SentenceEncoder.from_pretrained(cfg.model)
    enc.max_seq_length = cfg.max_seq_length
    emb = enc.encode([ex.text for ex in test], convert_to_tensor=True)
    from minimt.metrics import accuracy, confusion, macro_f1
    out = {}
    for task, prompts in PROMPTS.items():
        names = sorted(prompts)
        sims = cos_sim(emb, enc.encode([prompts[n] for n in names]))  # (N, C)
        m = confusion([names.index(ex.labels[task]) for ex in test], sims.argmax(1).tolist(), len(names))
        out[task] = {"accuracy": accuracy(m), "macro_f1": macro_f1(m)}
    return {"test": out, "trainable": 0, "wall_s": time.perf_counter() - t0, "samples_per_s": None,
            "sts_spearman": evaluate_sts(SentenceEncoder.from_pretrained(cfg.model))["spearman"],
            "command": "python examples/05_study.py zero_shot"}


def untrained_retrieval():
    """The pretrained encoder's recall@1 / MRR on AG News title -> description (held-out test split), and its STSb
    test Spearman through the pairs task (the same number as evaluate_sts): the bar the embedding rows must clear."""
    from minimt.evaluate import evaluate
    from minimt.multitask import MultiTaskModel
    from minimt.objectives import pair_tasks
    t0 = time.perf_counter()
    sources, splits = split_data(TrainConfig(sources=[AG_PAIRS] + STSB))
    test = splits["test"]
    model = MultiTaskModel(SentenceEncoder.from_pretrained("all-MiniLM-L6-v2"), {})
    res, _ = evaluate(model, test, {}, "test", specs=pair_tasks(sources))
    return {"test": {t: {k: v for k, v in r.items() if k not in ("kind", "n")} for t, r in res.items()},
            "trainable": 0, "wall_s": time.perf_counter() - t0, "samples_per_s": None,
            "sts_spearman": res["stsb"]["spearman"], "command": "python examples/05_study.py untrained"}


def continual():
    t0 = time.perf_counter()
    first = run("continual_1_domain", {"task_weights": {"sentiment": 0.0}})
    second = run("continual_2_sentiment", {"init_from": "runs/study/continual_1_domain/best",
                                           "freeze": ["head:domain"], "task_weights": {"domain": 0.0}})
    second["wall_s"] = time.perf_counter() - t0
    second["domain_before"] = first["test"]["domain"]
    second["command"] = first["command"] + " --out_dir=runs/study/continual_1_domain; " + second["command"]
    return second


def seeded(name):
    """The row SEEDED[name] once per seed, each in runs/study/<name>_<seed>; the mean of every metric."""
    row = SEEDED[name][0]
    runs = {seed: run(f"{name}_{seed}", {**(ALL[row][0] or {}), "seed": seed}) for seed in SEEDS}
    first = runs[SEEDS[0]]
    mean = {task: {m: sum(r["test"][task][m] for r in runs.values()) / len(runs) for m in metrics}
            for task, metrics in first["test"].items()}
    return {"test": mean, "seeds": {str(s): {"test": r["test"], "sts_spearman": r["sts_spearman"]}
                                    for s, r in runs.items()},
            "trainable": first["trainable"], "trainable_start": first["trainable_start"],
            "wall_s": sum(r["wall_s"] for r in runs.values()), "samples_per_s": None,
            "sts_spearman": sum(r["sts_spearman"] for r in runs.values()) / len(runs), "row": row,
            "command": f"python examples/05_study.py {name}"}


def main(names):
    OUT.mkdir(parents=True, exist_ok=True)
    results_path = OUT / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    torch.manual_seed(0)
    for name in names:
        print(f"\n##### {name}: {ALL[name][1]}")
        if name == "zero_shot":
            results[name] = zero_shot()
        elif name == "untrained":
            results[name] = untrained_retrieval()
        elif name == "continual":
            results[name] = continual()
        elif name in SEEDED:
            results[name] = seeded(name)
        else:
            results[name] = run(name, ALL[name][0])
            if name in OTHER or name in EMBEDDING:  # their sources are long JSON: name the row, set above
                results[name]["command"] = f"python examples/05_study.py {name}"
        results[name].update(what=ALL[name][1], cpu=cpu_name(), threads=torch.get_num_threads())
        files.write_text(results_path, json.dumps(results, indent=1) + "\n", option="path")  # a kill keeps the old
    write_readme(results)


def fmt(x, digits=3):
    return "—" if x is None else f"{x:.{digits}f}"


def hosts(results):
    """'2 threads of AMD EPYC', and a mark for each row measured on another CPU than most rows (its wall time is
    that CPU's): (header words, {row name: mark})."""
    ran = {name: f"{r['threads']} threads of {r['cpu']}" for name, r in results.items()}
    main_host = Counter(ran.values()).most_common(1)[0][0]
    others = list(dict.fromkeys(h for h in ran.values() if h != main_host))
    marks = {name: " " + "*" * (1 + others.index(h)) for name, h in ran.items() if h != main_host}
    words = main_host + "".join(f"; rows marked {'*' * (1 + i)} on {h}" for i, h in enumerate(others))
    return words, marks


def write_readme(results):
    where, mark = hosts(results)

    def wall(name):  # seconds, marked if the row ran on another CPU
        return f"{results[name]['wall_s']:.0f}{mark.get(name, '')}"

    lines = [f"Measured with `make study` on {where}; test split (1,000 reviews) of "
             f"multi_domain_sentiment, {STEPS} steps of 32 reviews cut at 128 tokens unless the row says otherwise.",
             "", "| mode | domain acc | domain F1 | sentiment acc | sentiment F1 | trainable params | wall s | "
                 "samples/s | STSb Spearman after | command |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in ROWS:
        if name not in results:
            continue
        r = results[name]
        d, s = r["test"].get("domain", {}), r["test"].get("sentiment", {})
        trainable = f"{r['trainable']:,}"
        if r.get("trainable_start", r["trainable"]) != r["trainable"]:
            trainable = f"{r['trainable_start']:,} → {r['trainable']:,}"
        rate = "—" if r["samples_per_s"] is None else f"{r['samples_per_s']:,.{1 if r['samples_per_s'] < 100 else 0}f}"
        extra = ""
        if "domain_before" in r:
            extra = f" (domain acc before phase 2: {r['domain_before']['accuracy']:.3f})"
        lines.append(f"| {r['what']}{extra} | {fmt(d.get('accuracy'))} | {fmt(d.get('macro_f1'))} | "
                     f"{fmt(s.get('accuracy'))} | {fmt(s.get('macro_f1'))} | {trainable} | {wall(name)} | "
                     f"{rate} | {r['sts_spearman']:.2f} | `{r['command']}` |")
    if "heads_cached" in results and "heads_uncached" in results:
        fast, slow = results["heads_cached"]["samples_per_s"], results["heads_uncached"]["samples_per_s"]
        lines += ["", f"Embedding cache: heads-only training runs at {fast:,.0f} samples/s on cached vectors against "
                      f"{slow:,.1f} samples/s through the frozen encoder, {fast / slow:,.0f}x faster per epoch (the "
                      f"cache itself costs one encoder pass over the distinct texts)."]
    lines += ["", "| tasks on the embedding | domain acc | sentiment acc | STSb test Spearman after | AG News title → "
                  "description: recall@1 / MRR (test) | trainable params | wall s | command |",
              "|---|---|---|---|---|---|---|---|"]
    for name in EMBEDDING:
        if name in results:
            r = results[name]
            d, s, ag = (r["test"].get(t, {}) for t in ("domain", "sentiment", "ag_retrieval"))
            retrieval = f"{ag['recall_at_1']:.3f} / {ag['mrr']:.3f}" if ag else "—"
            lines.append(f"| {r['what']} | {fmt(d.get('accuracy'))} | {fmt(s.get('accuracy'))} | "
                         f"{r['sts_spearman']:.2f} | {retrieval} | {r['trainable']:,} | {wall(name)} | "
                         f"`{r['command']}` |")
    seeded_rows = [name for name in SEEDED if name in results]
    if seeded_rows:
        seeds = " / ".join(map(str, SEEDS))
        lines += ["", f"| row, with seeds {seeds} | sentiment acc | mean | domain acc | STSb Spearman after | mean | "
                      "wall s (all seeds) | command |", "|---|---|---|---|---|---|---|---|"]
        for name in seeded_rows:
            r = results[name]
            per = [r["seeds"][str(s)] for s in SEEDS]
            sentiment, domain = (" / ".join(fmt(p["test"][t]["accuracy"]) for p in per)
                                 for t in ("sentiment", "domain"))
            sts = " / ".join(f"{p['sts_spearman']:.2f}" for p in per)
            lines.append(f"| {r['what']} | {sentiment} | {fmt(r['test']['sentiment']['accuracy'])} | {domain} | "
                         f"{sts} | {r['sts_spearman']:.2f} | {wall(name)} | `{r['command']}` |")
    lines += ["", "| other set-ups | task: test acc / macro-F1 | wall s | STSb Spearman after | command |",
              "|---|---|---|---|---|"]
    for name in OTHER:
        if name in results:
            r = results[name]
            tasks = "; ".join(f"{t}: {m['accuracy']:.3f} / {m['macro_f1']:.3f}" for t, m in r["test"].items())
            lines.append(f"| {r['what']} | {tasks} | {wall(name)} | {r['sts_spearman']:.2f} | "
                         f"`{r['command']}` |")
    discussed = ("heads_cached", "top2", "full", "gradual", "continual", "joint_stsb_w005")  # README, docs/study.md
    plot_study({name: results[name] for name in ROWS | EMBEDDING if name in results}, FIGURE, highlight=discussed)
    readme = ROOT / "docs" / "study.md"  # the study's page; the figure is linked relative to it
    lines += ["", f"![accuracy per task and STSb after training, against trainable parameters]"
                  f"({Path('..') / FIGURE.relative_to(ROOT)})"]
    text = readme.read_text(encoding="utf-8")
    start, end = "<!-- study:start -->", "<!-- study:end -->"
    head, rest = text.split(start, 1)
    files.write_text(readme, head + start + "\n" + "\n".join(lines) + "\n" + end + rest.split(end, 1)[1], option="path")


if __name__ == "__main__":
    import os
    os.chdir(ROOT)  # the settings name paths relative to the repository (runs/study/..., examples/...)
    if sys.argv[1:] == ["readme"]:  # rewrite docs/study.md's tables from runs/study/results.json, no training
        write_readme(json.loads((OUT / "results.json").read_text()))
        sys.exit()
    chosen = sys.argv[1:] or list(ALL)
    if chosen == ["--missing"]:
        done = json.loads((OUT / "results.json").read_text()) if (OUT / "results.json").exists() else {}
        chosen = [n for n in ALL if n not in done]
        print(f"rows still to run: {chosen or 'none'}")
    unknown = [n for n in chosen if n not in ALL]
    if unknown:
        sys.exit(f"unknown rows {unknown}; choose from {list(ALL)}")
    main(chosen)
