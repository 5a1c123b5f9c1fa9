"""minimt at an earlier commit against minimt now, on make bench's workloads, side by side in one run.

    cd tests/bench && ../../.venv-dev/bin/python bench_before_after.py REV [ROUNDS]

REV's minimt/ is extracted (git archive) into a temporary folder; each round runs one process per version, in turn,
each timing sentence-transformers too, so a slow moment of the machine shows in both the version and its baseline:
  W1  the 2,758 STSb test sentences in one encode call (float32, bfloat16), seconds
  W3  one sentence per call, median of 200 calls (float32, bfloat16), ms
  T1  training samples/s: MultiTaskModel with two heads, batches of 32 reviews cut at 128 tokens, fused AdamW
Prints each round and the medians; a round whose sentence-transformers timing is 1.3x its median was disturbed by
something else on the machine and is left out.
"""
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["W1_mt_s", "W1_mt16_s", "W3_mt_ms", "W3_mt16_ms", "T1_mt_samples_s", "W1_st_s", "W3_st_ms"]


def measure():
    """One version's numbers (run in a child process whose PYTHONPATH picks the version)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer

    from minimt import SentenceEncoder
    from minimt.multitask import MultiTaskModel
    weights = os.environ["MINIMT_WEIGHTS"] + "/all-MiniLM-L6-v2"
    data = Path(os.environ["MINIMT_DATA"])
    s1, s2 = [], []
    for line in (data / "stsb" / "sts-test.csv").read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        s1.append(cols[5])
        s2.append(cols[6])
    w1 = s1 + s2
    st = SentenceTransformer(weights, device="cpu")
    mt, mt16 = SentenceEncoder.from_pretrained(weights), SentenceEncoder.from_pretrained(weights, dtype="bfloat16")

    def median_s(fn, reps=3):
        fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def latency_ms(fn, texts):
        times = []
        for b0 in range(0, len(texts), 21):  # blocks of 21: the first call of a block only warms up
            fn(texts[b0])
            for t in texts[b0 + 1:b0 + 21]:
                t0 = time.perf_counter()
                fn(t)
                times.append(time.perf_counter() - t0)
        return 1000 * statistics.median(times)

    out = {"W1_st_s": median_s(lambda: st.encode(w1, batch_size=32)), "W1_mt_s": median_s(lambda: mt.encode(w1)),
           "W1_mt16_s": median_s(lambda: mt16.encode(w1))}
    one = [w1[i] for i in np.random.default_rng(0).choice(len(w1), 210, replace=False)]
    out |= {"W3_st_ms": latency_ms(st.encode, one), "W3_mt_ms": latency_ms(mt.encode, one),
            "W3_mt16_ms": latency_ms(mt16.encode, one)}
    reviews = []
    for path in sorted((data / "multi_domain_sentiment").glob("*.tsv")):
        with open(path, newline="", encoding="utf-8") as f:  # quoted reviews span lines
            reviews += [row["sentence"] for _, row in zip(range(200), csv.DictReader(f, delimiter="\t"))]
    enc = SentenceEncoder.from_pretrained(weights)
    enc.max_seq_length = 128
    model = MultiTaskModel(enc, {"a": ["x", "y", "z"], "b": ["p", "q"]})
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)
    rng = np.random.default_rng(0)
    batches = [model.tokenizer.encode([reviews[i] for i in rng.choice(len(reviews), 32, replace=False)])
               for _ in range(12)]
    ya, yb = torch.arange(32) % 3, torch.arange(32) % 2

    def step(ids):
        model.train()
        logits = model.classify(model(ids))
        (F.cross_entropy(logits["a"], ya) + F.cross_entropy(logits["b"], yb)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    step(batches[0])
    step(batches[1])
    t0 = time.perf_counter()
    for ids in batches[2:]:
        step(ids)
    out["T1_mt_samples_s"] = 32 * len(batches[2:]) / (time.perf_counter() - t0)
    print(json.dumps(out))


def main(rev, rounds):
    env = dict(os.environ, HF_HUB_OFFLINE="1", MINIMT_WEIGHTS=str(ROOT / "weights"), MINIMT_DATA=str(ROOT / "data"))
    with tempfile.TemporaryDirectory() as old:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "minimt"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", old], input=archive.stdout, check=True)
        versions = {rev: old, "now": str(ROOT)}
        runs = {v: [] for v in versions}
        for r in range(rounds):
            for v, path in versions.items():
                child = subprocess.run([sys.executable, __file__, "--measure"], env=dict(env, PYTHONPATH=path),
                                       capture_output=True, text=True, check=True)
                runs[v].append(json.loads(child.stdout.strip().splitlines()[-1]))
                print(f"round {r + 1} {v:>8}: " + "  ".join(f"{k} {runs[v][-1][k]:.2f}" for k in KEYS), flush=True)
    st_w1 = statistics.median(x["W1_st_s"] for rs in runs.values() for x in rs)
    st_w3 = statistics.median(x["W3_st_ms"] for rs in runs.values() for x in rs)
    print(f"\n{'':18}" + "".join(f"{v:>10}" for v in versions) + "   (medians of the undisturbed rounds)")
    for k in KEYS:
        cells = []
        for v in versions:
            quiet = [x for x in runs[v] if x["W1_st_s"] < 1.3 * st_w1 and x["W3_st_ms"] < 1.3 * st_w3]
            cells.append(f"{statistics.median(x[k] for x in quiet):10.2f}" if quiet else f"{'-':>10}")
        print(f"{k:18}" + "".join(cells))


if __name__ == "__main__":
    if sys.argv[1:] == ["--measure"]:
        measure()
    else:
        main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
