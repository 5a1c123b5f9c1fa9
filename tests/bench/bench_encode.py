"""Encode speed: minimt vs sentence-transformers, side by side in one process, interleaved.

    make bench       (runs in .venv-dev, the reference-tool environment; not part of make test)

W1: the 2,758 sentences of the STS benchmark test split (1,379 pairs; short: ~14 tokens). Each repeat times every
contender once, in turn, so a slow moment of the machine hits all of them alike; the table shows medians.
Writes tests/bench/results.json and the table between the bench markers in README.md.
"""
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import sentence_transformers
import transformers
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

from minimt import SentenceEncoder
from minimt.similarity import read_sts

HERE = Path(__file__).resolve().parent
MINILM = HERE.parents[1] / "weights" / "all-MiniLM-L6-v2"
REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 5


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def hf_encode(model, tok, texts, batch_size=32):
    """The usual hand-rolled peer: transformers BertModel (SDPA), token-length-sorted batches, mean pool + L2."""
    ids = tok(texts, truncation=True, max_length=256)["input_ids"]
    order = np.argsort([-len(x) for x in ids], kind="stable")
    out = np.empty((len(texts), model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            batch = tok.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
            hidden = model(**batch).last_hidden_state                   # (b, T, H)
            m = batch["attention_mask"].unsqueeze(-1).float()           # (b, T, 1)
            emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)        # (b, H)
            out[idx] = torch.nn.functional.normalize(emb, dim=-1).numpy()
    return out


def main():
    s1, s2, _ = read_sts("test")
    w1 = s1 + s2
    st = SentenceTransformer(str(MINILM), device="cpu")
    mt = SentenceEncoder.from_pretrained(MINILM)
    mt16 = SentenceEncoder.from_pretrained(MINILM, dtype="bfloat16")
    hf_tok = AutoTokenizer.from_pretrained(str(MINILM))
    hf = AutoModel.from_pretrained(str(MINILM), attn_implementation="sdpa").eval()
    contenders = {
        "sentence-transformers encode (batch 32)": lambda: st.encode(w1, batch_size=32, convert_to_numpy=True),
        "HF AutoModel, SDPA, length-sorted (batch 32)": lambda: hf_encode(hf, hf_tok, w1),
        "minimt encode (batch 32)": lambda: mt.encode(w1, batch_size=32),
        "minimt encode bfloat16 (batch 32)": lambda: mt16.encode(w1, batch_size=32),
    }
    outputs = {name: fn() for name, fn in contenders.items()}  # warm-up, and the outputs to compare
    ref = outputs["sentence-transformers encode (batch 32)"]
    times = {name: [] for name in contenders}
    for _ in range(REPEATS):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    base = statistics.median(times["sentence-transformers encode (batch 32)"])
    rows = []
    print(f"W1: {len(w1)} STSb test sentences, {REPEATS} interleaved repeats, "
          f"torch threads {torch.get_num_threads()}, {cpu_name()}")
    print(f"{'contender':<46} {'median s':>9} {'sent/s':>8} {'speed-up':>9} {'max |diff|':>11}")
    for name in contenders:
        med = statistics.median(times[name])
        diff = float(np.abs(outputs[name] - ref).max())
        rows.append({"workload": "W1", "contender": name, "median_s": med, "sentences_per_s": len(w1) / med,
                     "speedup_vs_st": base / med, "max_abs_diff_vs_st": diff, "times_s": times[name]})
        print(f"{name:<46} {med:9.3f} {len(w1) / med:8.0f} {base / med:8.2f}x {diff:11.1e}")
    result = {"date": date.today().isoformat(), "cpu": cpu_name(), "threads": torch.get_num_threads(),
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "sentence_transformers": sentence_transformers.__version__,
                           "transformers": transformers.__version__},
              "repeats": REPEATS, "rows": rows}
    (HERE / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    write_readme_table(result, len(w1))


def write_readme_table(result, n):
    """Replace the README's bench table with this run's numbers: the table is generated, never typed."""
    lines = [f"Measured {result['date']} on {result['cpu']} ({result['threads']} threads), torch "
             f"{result['versions']['torch']}, sentence-transformers {result['versions']['sentence_transformers']}; "
             f"W1 = the {n} sentences of STSb test, median of {result['repeats']} interleaved repeats "
             f"(`make bench`).", "",
             "| contender | median s | sentences/s | speed-up vs sentence-transformers | max abs diff |",
             "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['contender']} | {r['median_s']:.3f} | {r['sentences_per_s']:.0f} | "
                     f"{r['speedup_vs_st']:.2f}x | {r['max_abs_diff_vs_st']:.1e} |")
    readme = HERE.parents[1] / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{readme} has no {start} ... {end} markers to put the table between")
    head, rest = text.split(start, 1)
    readme.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + rest.split(end, 1)[1], encoding="utf-8")


if __name__ == "__main__":
    main()
