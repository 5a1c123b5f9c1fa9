"""Encode speed: minimt vs the tools people use, side by side in one process, interleaved.

    make bench       (runs in .venv-dev, the reference-tool environment; not part of make test)

Workloads (all fp32 unless the row says bf16; sentence-transformers' encode at batch 32 is the 1.00x baseline):
  W1  the 2,758 sentences of the STS benchmark test split (short: ~14 tokens)
  W2  500 long reviews from the multi-domain sentiment files, 150-256 tokens each (seeded selection)
  W3  latency: one sentence per call at batch size 1, 200 different STSb sentences, median and p90 (see latency);
      float32, and minimt in bfloat16 too
minimt runs eagerly (its default: packed batches) and compiled (from_pretrained(..., compile=True): torch.compile of
the padded forward and pooling); the compiled contenders' first calls compile, outside the timing. What that costs
is measured apart (compile_cost): the first calls in a fresh process, over eager first calls, with inductor's
on-disk cache empty (cold) and filled by the cold run (warm).
Each repeat times every contender once, in turn, so a slow moment of the machine hits all of them alike; the table
shows medians. The matmul ceiling is measured here too: a GEMM of the model's own shapes (4,096 tokens x the Q/K/V,
output, FFN-up and FFN-down matrices) in fp32 and bf16, the faster of plain and prepacked weights;
"ceiling" = the workload's matmul FLOPs at that speed.
Writes the "encode" part of tests/bench/results.json and the table between the bench markers in README.md.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import openvino
import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

from common import (MINILM, MT, MT1, MT1_16, MT1C, MT1C_16, MT16, MTC, MTC16, RESULTS, ROOT, ST, cpu_name,
                    save_results, write_readme)
from minimt import SentenceEncoder
from minimt.data import Source, read_source
from minimt.pooling import pool
from minimt.evaluate import read_sts
from minimt.similarity import spearman
from onnx_peers import OpenVinoEncoder, OrtEncoder, export_onnx, ort_optimize

REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
ONLY = sys.argv[2].split(",") if len(sys.argv) > 2 else ["W1", "W2", "W3"]  # e.g. "W3": rerun one, keep the rest


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


@torch.inference_mode()
def padded_encode(enc, texts, batch_size=32):
    """minimt's model on padded, length-sorted batches of 32 with the attention mask: what packing saves."""
    out = np.empty((len(texts), enc.dim), np.float32)
    for idx, ids in enc.tokenizer.token_batches(enc.tokenizer.encode(texts), None, batch_size):
        batch = enc.tokenizer.pad(ids)
        v = pool(enc.model(**batch), batch["attention_mask"], enc.config.pooling)    # (b, H)
        out[idx] = torch.nn.functional.normalize(v.float(), dim=-1).numpy()
    return out


def long_reviews(tok, n=500, lo=150, hi=256, seed=0):
    """W2: n reviews whose full length is lo..hi tokens (so nothing is cut), a seeded random choice."""
    src = Source(path="multi_domain_sentiment/*.tsv", text="sentence", labels={"sentiment": "label"})
    texts = sorted({ex.text for ex in read_source(src)})
    full = tok.encode(texts)
    fit = [t for t, ids in zip(texts, full) if lo <= len(ids) <= hi]
    return [fit[i] for i in np.random.default_rng(seed).choice(len(fit), n, replace=False)]


def matmul_gflops(dtype, tokens=4096, H=384, I=1536, reps=20):
    """GFLOP/s of one layer's four matmuls (QKV stacked, out, FFN up, FFN down) on `tokens` rows: the faster of the
    two GEMMs PyTorch's CPU build offers, F.linear (MKL / oneDNN, weight repacked per call) and oneDNN on a weight
    prepacked once (what torch.compile's freezing does for inference)."""
    x, xi = torch.randn(tokens, H, dtype=dtype), torch.randn(tokens, I, dtype=dtype)
    ws = [(x, torch.randn(3 * H, H, dtype=dtype)), (x, torch.randn(H, H, dtype=dtype)),
          (x, torch.randn(I, H, dtype=dtype)), (xi, torch.randn(H, I, dtype=dtype))]
    flops = sum(2 * a.shape[0] * w.shape[0] * w.shape[1] for a, w in ws)
    packed = [(a, torch.ops.mkldnn._reorder_linear_weight(w, None)) for a, w in ws]
    kernels = {"F.linear": lambda: [torch.nn.functional.linear(a, w) for a, w in ws],
               "prepacked": lambda: [torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], "") for a, w in packed]}
    best = float("inf")
    for run in kernels.values():
        run()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        best = min(best, statistics.median(times))
    return flops / best / 1e9


def matmul_flops(n_tokens, H=384, I=1536, L=6):
    return n_tokens * L * 2 * (4 * H * H + 2 * H * I)  # the dense layers only; attention is ~1% at these lengths


def throughput(contenders, texts, repeats):
    outputs = {name: fn(texts) for name, fn in contenders.items()}  # warm-up, and the outputs to compare
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn(texts)
            times[name].append(time.perf_counter() - t0)
    return outputs, times


def latency(contenders, texts, block=21):
    """Blocks of `block` calls per contender, in turn: the first call of a block only warms up (after another
    runtime's threads had the cores) and is not counted. Calling each contender once per sentence in turn would
    time mostly the hand-over between thread pools (ONNX Runtime's and OpenMP's threads spin after a call)."""
    times = {name: [] for name in contenders}
    for b0 in range(0, len(texts), block):
        for name, fn in contenders.items():
            fn(texts[b0])
            for t in texts[b0 + 1:b0 + block]:
                t0 = time.perf_counter()
                fn(t)
                times[name].append(time.perf_counter() - t0)
    return times


FIRST_CALLS = """
import sys, time
from minimt import SentenceEncoder
def first_calls(compile):
    t0 = time.perf_counter()
    enc = SentenceEncoder.from_pretrained(sys.argv[1], dtype=sys.argv[2], compile=compile)
    enc.encode(["a first sentence", "and a second, longer one"])  # the graph for every batch of 2 or more
    enc.encode("one sentence")                                     # batch 1: a graph of its own
    assert not compile or enc.compiled.fn is not None, "the compile failed"
    return time.perf_counter() - t0
eager = first_calls(False)
print(first_calls(True) - eager)
"""


def compile_cost(dtype):
    """{"cold_s", "warm_s", "kernels"}: what the first compiled calls cost over eager ones, in a fresh process
    each, and what the cold run generated."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        cost = [float(subprocess.run([sys.executable, "-c", FIRST_CALLS, str(MINILM), dtype], env=env, check=True,
                                     capture_output=True, text=True).stdout) for _ in ("cold", "warm")]
        return {"cold_s": cost[0], "warm_s": cost[1], "kernels": kernel_counts(Path(cache))}


def kernel_counts(cache):
    """The kernels one forward of the compiled graph calls, from inductor's generated code (each graph's module has
    a call() that runs them in order): {"fused": generated C++ kernels, "names": their distinct names, "library":
    {op: calls} for what it leaves to libraries (GEMMs, attention)}, for the graph of batches of 2 or more."""
    graphs = [src for src in (f.read_text() for f in cache.rglob("*.py")) if "def call(" in src]
    src = max(graphs, key=lambda g: len(re.findall(r"\bs\d+\b", g)))  # the dynamic graph names its sizes s0, s1, ...
    call = src[src.index("def call("):]
    library = {}
    for op in re.findall(r"(extern_kernels\.\w+|torch\.ops\.\w+\.\w+(?:\.\w+)?)\(", call):
        op = re.sub(r"^(extern_kernels|torch\.ops\.\w+)\.", "", op).removesuffix(".default")  # binary: + an add
        library[op] = library.get(op, 0) + 1
    return {"graphs": len(graphs), "fused": len(re.findall(r"\bcpp_fused_\w+\(", call)),
            "names": sorted(set(re.findall(r"^(cpp_fused_\w+?)(?:_\d+)? = ", src, re.M))), "library": library}


def w3(st, hf, hf_tok, ort, ov, mt, mt16, mtc, mtc16, w1):
    lat = {ST: lambda t: st.encode(t), "HF AutoModel, SDPA": lambda t: hf_encode(hf, hf_tok, [t]),
           "ONNX Runtime, optimized": lambda t: ort.encode([t], batch_size=1),
           "OpenVINO, f32 hint": lambda t: ov.encode([t], batch_size=1), MT1: lambda t: mt.encode(t),
           MT1_16: lambda t: mt16.encode(t), MT1C: lambda t: mtc.encode(t), MT1C_16: lambda t: mtc16.encode(t)}
    one = [w1[i] for i in np.random.default_rng(0).choice(len(w1), 210, replace=False)]  # 10 blocks of 21: 200 timed
    times = latency(lat, one)
    base = statistics.median(times[ST])
    print(f"\nW3: one sentence per call, {len(times[ST])} timed calls each, in interleaved blocks of 21")
    print(f"{'contender':<50} {'median ms':>9} {'p90 ms':>9} {'time vs ST':>10}")
    rows = []
    for name in lat:
        med, p90 = statistics.median(times[name]), float(np.percentile(times[name], 90))
        rows.append({"workload": "W3", "contender": name, "median_s": med, "p90_s": p90,
                     "time_vs_st": med / base, "speedup_vs_st": base / med})
        print(f"{name:<50} {med * 1e3:9.2f} {p90 * 1e3:9.2f} {med / base:9.2f}x")
    return rows


def main():
    s1, s2, gold = read_sts("test")
    w1 = s1 + s2
    st = SentenceTransformer(str(MINILM), device="cpu")
    mt = SentenceEncoder.from_pretrained(MINILM)
    mt16 = SentenceEncoder.from_pretrained(MINILM, dtype="bfloat16")
    mtc = SentenceEncoder.from_pretrained(MINILM, compile=True)
    mtc16 = SentenceEncoder.from_pretrained(MINILM, dtype="bfloat16", compile=True)
    hf_tok = AutoTokenizer.from_pretrained(str(MINILM))
    hf = AutoModel.from_pretrained(str(MINILM), attn_implementation="sdpa").eval()
    onnx = export_onnx(MINILM, ROOT / "weights" / "onnx")
    ort = OrtEncoder(ort_optimize(onnx), MINILM)
    ov = OpenVinoEncoder(onnx, MINILM)
    w2 = long_reviews(mt.tokenizer)
    gf = {"float32": matmul_gflops(torch.float32), "bfloat16": matmul_gflops(torch.bfloat16)}
    print(f"{cpu_name()}, torch threads {torch.get_num_threads()}; matmul ceiling (model shapes, 4,096 tokens): "
          f"fp32 {gf['float32']:.0f} GFLOP/s, bf16 {gf['bfloat16']:.0f} GFLOP/s")

    peers = {ST: lambda x: st.encode(x, batch_size=32, convert_to_numpy=True),
             "HF AutoModel, SDPA, length-sorted (batch 32)": lambda x: hf_encode(hf, hf_tok, x),
             "ONNX Runtime, transformers optimizer (batch 32)": lambda x: ort.encode(x, batch_size=32),
             "OpenVINO, f32 hint (batch 32)": lambda x: ov.encode(x, batch_size=32),
             "minimt, padded batches of 32 (model.py's masked form)": lambda x: padded_encode(mt, x),
             MT: lambda x: mt.encode(x), MTC: lambda x: mtc.encode(x)}
    bf16 = {MT16: lambda x: mt16.encode(x), MTC16: lambda x: mtc16.encode(x)}
    old = json.loads(RESULTS.read_text()).get("encode", {}) if RESULTS.exists() else {}
    rows = [r for r in old.get("rows", []) if r["workload"] not in ONLY]
    gate = old.get("bf16_gate")
    for wl, texts, cont in (("W1", w1, {**peers, **bf16}), ("W2", w2, peers)):
        if wl not in ONLY:
            continue
        tokens = sum(len(x) for x in mt.tokenizer.encode(texts))
        outputs, times = throughput(cont, texts, REPEATS)
        base = statistics.median(times[ST])
        print(f"\n{wl}: {len(texts)} texts, {tokens} tokens, {REPEATS} interleaved repeats")
        print(f"{'contender':<50} {'median s':>9} {'tokens/s':>9} {'speed-up':>9} {'of ceiling':>10} {'max|diff|':>10}")
        for name in cont:
            med = statistics.median(times[name])
            dtype = "bfloat16" if "bfloat16" in name else "float32"
            ceiling = matmul_flops(tokens) / (gf[dtype] * 1e9)
            diff = float(np.abs(outputs[name] - outputs[ST]).max())
            rows.append({"workload": wl, "contender": name, "median_s": med, "texts": len(texts), "tokens": tokens,
                         "tokens_per_s": tokens / med, "speedup_vs_st": base / med, "ceiling_s": ceiling,
                         "share_of_ceiling": ceiling / med, "max_abs_diff_vs_st": diff, "times_s": times[name]})
            print(f"{name:<50} {med:9.3f} {tokens / med:9.0f} {base / med:8.2f}x {ceiling / med:9.0%} {diff:10.1e}")
        print(f"{'fp32 matmul ceiling':<50} {matmul_flops(tokens) / gf['float32'] / 1e9:9.3f} "
              f"{'':9} {base / (matmul_flops(tokens) / gf['float32'] / 1e9):8.2f}x")
        if wl == "W1":  # the bf16 quality gate, on the full split: Spearman and the worst cosine vs fp32
            n, e32 = len(s1), outputs[MT]
            gate = {"spearman_fp32": 100 * spearman((e32[:n] * e32[n:]).sum(1), gold)}
            for key, name in (("bf16", MT16), ("bf16_compiled", MTC16)):
                e16 = outputs[name]
                gate[f"spearman_{key}"] = 100 * spearman((e16[:n] * e16[n:]).sum(1), gold)
                gate[f"min_cos_{key}_vs_fp32"] = float((e16 * e32).sum(1).min())
                print(f"bf16 gate, {name}: Spearman {gate[f'spearman_{key}']:.2f} (fp32 "
                      f"{gate['spearman_fp32']:.2f}), min cosine vs fp32 {gate[f'min_cos_{key}_vs_fp32']:.5f}")

    if "W3" in ONLY:
        rows += w3(st, hf, hf_tok, ort, ov, mt, mt16, mtc, mtc16, w1)
    cost = {dtype: compile_cost(dtype) for dtype in ("float32", "bfloat16")}
    print("compile cost (first calls over eager, fresh process): " + "; ".join(
        f"{d} cold {c['cold_s']:.1f} s, warm {c['warm_s']:.1f} s" for d, c in cost.items()))
    if "W1" not in ONLY and "W2" not in ONLY:  # the ceiling the kept rows' shares were computed with
        gf = old["matmul_gflops"]
    result = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "repeats": REPEATS,
              "matmul_gflops": gf, "bf16_gate": gate, "compile_cost": cost, "rows": rows,
              "versions": {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
                           "transformers": transformers.__version__, "onnxruntime": onnxruntime.__version__,
                           "openvino": openvino.__version__}}
    save_results("encode", result)
    write_readme()


if __name__ == "__main__":
    main()
