"""Where the time goes: torch.profiler over the bench's workloads, each op's own time put into a few groups, so a
target that is out of reach shows what bounds it.

    make bench      (or: cd tests/bench && ../../.venv-dev/bin/python bench_profile.py [--quick])

Workloads, as in bench_encode.py and bench_train.py: W1 (the 2,758 STSb test sentences in one encode call), W3 (one
sentence per call; 50 of W3's sentences), in float32 eager and compiled and in bfloat16 eager; T1 (three training
steps of batch 32, fp32, eager). Each runs once unprofiled first (warm-up, and the compile for the compiled path).
Groups, by the profiler's op names (self time: time inside the op, not in the ops it calls):
  GEMM          addmm, mm, bmm, linear and oneDNN / MKL linear ops: the dense layers, forward and backward
  attention     scaled_dot_product_attention's kernels (in training, with dropout, SDPA runs its math path on the
                CPU: its two matmuls count as GEMM, its softmax and dropout as element-wise)
  element-wise  GELU, adds, LayerNorm, dropout, embedding lookups, copies, the optimizer's fused step, ...
  compiled      the generated kernels of a compiled region (inductor's C++ code, seen as the region's own time)
  host          the rest of the wall time: Python, tokenizing, dispatch between ops
GEMM GFLOP/s is the GEMMs' FLOPs (the profiler's count; for oneDNN's linear, which it does not count, 2·M·K·N
from the shapes) over the GEMM time; set it beside the matmul ceiling of bench_encode.py. Writes the "profile" part of tests/bench/results.json.
"""
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench_train import CFG, minimt_model, minimt_step, t1_batches, t1_data
from common import MINILM, cpu_name, save_results, write_readme
from minimt import SentenceEncoder
from minimt.evaluate import read_sts
from minimt.train import build_optimizer

GEMM = ("addmm", "aten::mm", "bmm", "linear", "_mkl_linear", "_linear_pointwise", "matmul")
ATTENTION = ("scaled_dot_product", "flash_attention", "efficient_attention", "attention_math")
QUICK = "--quick" in sys.argv  # a small run that writes nothing: does the script work
COMPILED = ("Torch-Compiled Region", "CompiledFunction", "CompiledFxGraph", "cpp_fused", "inductor")


def group(name):
    if any(k in name for k in COMPILED):
        return "compiled"
    if any(k in name for k in ATTENTION):
        return "attention"
    if any(k in name for k in GEMM):
        return "GEMM"
    return "element-wise" if name.startswith("aten::") or name.startswith("mkldnn::") else "host"


def linear_flops(ev):
    """oneDNN's linear, what inductor calls on a frozen weight, for which the profiler counts no FLOPs: 2·M·K·N from
    its input (M, K) and its weight (N, K), the last 2-D argument (a fused add's operand comes before it)."""
    (m, k), (n, _) = ev.input_shapes[0], [shape for shape in ev.input_shapes[1:] if len(shape) == 2][-1]
    return 2 * m * k * n


def profiled(run):
    """{"total_s", "groups": {group: s}, "top_ops", "gemm_gflops"}: one call of run() under the profiler."""
    run()  # warm-up (and the compile)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        t0 = time.perf_counter()
        run()
        total = time.perf_counter() - t0
    groups, gemm_flops = {"GEMM": 0.0, "attention": 0.0, "element-wise": 0.0, "compiled": 0.0}, 0
    for ev in prof.key_averages():
        g = group(ev.key)
        if g != "host":
            groups[g] += ev.self_cpu_time_total / 1e6
        if g == "GEMM":
            gemm_flops += ev.flops or 0
    gemm_flops += sum(linear_flops(ev) for ev in prof.events() if ev.name == "mkldnn::_linear_pointwise")
    groups["host"] = max(total - sum(groups.values()), 0.0)
    top = sorted(prof.key_averages(), key=lambda ev: -ev.self_cpu_time_total)[:12]  # to check the grouping by
    return {"total_s": total, "groups": groups, "top_ops": [[ev.key, ev.self_cpu_time_total / 1e6] for ev in top],
            "gemm_gflops": gemm_flops / groups["GEMM"] / 1e9 if groups["GEMM"] and gemm_flops else None}


def t1_steps():
    train, maps = t1_data()
    batches = t1_batches(train, maps, 3)
    model = minimt_model(maps)
    opt = build_optimizer(model, CFG)
    return lambda: [minimt_step(model, opt, b, maps, CFG) for b in batches]


def main():
    s1, s2, _ = read_sts("test")
    w1, one = (s1 + s2)[:(64 if QUICK else None)], (s1 + s2)[:(3 if QUICK else 50)]
    encoders = {("float32", "eager"): SentenceEncoder.from_pretrained(MINILM),
                ("float32", "compiled"): SentenceEncoder.from_pretrained(MINILM, compile=True),
                ("bfloat16", "eager"): SentenceEncoder.from_pretrained(MINILM, dtype="bfloat16")}
    rows = []
    for (dtype, path), enc in encoders.items():
        for wl, run in (("W1", lambda: enc.encode(w1)), ("W3", lambda: [enc.encode(t) for t in one])):
            rows.append({"workload": wl, "dtype": dtype, "path": path, **profiled(run)})
    if not QUICK:
        rows.append({"workload": "T1", "dtype": "float32", "path": "eager", **profiled(t1_steps())})
    for r in rows:
        shares = ", ".join(f"{g} {s / r['total_s']:.0%}" for g, s in r["groups"].items())
        gf = f"; GEMMs at {r['gemm_gflops']:.0f} GFLOP/s" if r["gemm_gflops"] else ""
        print(f"{r['workload']} {r['dtype']} {r['path']}: {r['total_s']:.3f} s: {shares}{gf}", flush=True)
    if QUICK:
        return
    save_results("profile", {"cpu": cpu_name(), "threads": torch.get_num_threads(), "rows": rows,
                             "versions": {"torch": torch.__version__}})
    write_readme()


if __name__ == "__main__":
    main()
