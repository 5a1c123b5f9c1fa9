"""What the bench scripts share: paths, the CPU's name, results.json, and the tables made from it: every table of
tests/bench/README.md and the summary in the main README (`python common.py` rewrites them without measuring)."""
import json
import platform
from datetime import date
from pathlib import Path

from minimt.devices import cpu_name  # noqa: F401 (the bench scripts import it from here)
from minimt.io.download import fetch
from minimt.tokenizer import MAX_TOKENS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MINILM = fetch("all-MiniLM-L6-v2")  # weights/ or the Hugging Face cache, wherever `make weights` found it
RESULTS = HERE / "results.json"
ST = "sentence-transformers encode (batch 32)"
MT = f"minimt (packed, {MAX_TOKENS:,}-token batches)"  # encode's defaults; W1 and W2
MT16 = "minimt, bfloat16"                      # W1
MT1 = "minimt encode"                          # W3, one sentence per call
MT1_16 = "minimt encode, bfloat16"             # W3
MTC = "minimt, compiled"                       # W1, W2 (from_pretrained(..., compile=True)) and T1
MTC16 = "minimt, compiled, bfloat16"           # W1
MT1C = "minimt encode, compiled"               # W3
MT1C_16 = "minimt encode, compiled, bfloat16"  # W3


def save_results(part, result):
    """Store one script's results under `part` of results.json, keeping the other scripts' parts."""
    all_results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    all_results[part] = {"date": date.today().isoformat(), "python": platform.python_version(), **result}
    RESULTS.write_text(json.dumps(all_results, indent=1) + "\n")


def row(results, workload, contender):
    """The one row of `workload` whose contender is `contender`, or else starts with it."""
    rows = [r for r in results["rows"] if r["workload"] == workload]
    hits = [r for r in rows if r["contender"] == contender] or [r for r in rows if r["contender"].startswith(contender)]
    if len(hits) != 1:
        raise KeyError(f"results.json has {len(hits)} {workload} rows starting {contender!r}")
    return hits[0]


def fastest(e, workload, names):
    """minimt's fastest row of `workload` among the contenders `names` (eager and compiled)."""
    return min((r for r in e["rows"] if r["workload"] == workload and r["contender"] in names),
               key=lambda r: r["median_s"])


def targets(res):
    """The performance issues' targets against this run's numbers: (workload, target, measured, met). Each minimt
    row is the faster of its eager and compiled paths, named."""
    e, t, m = res.get("encode"), res.get("train"), res.get("memory")
    out = []
    if e:
        w1, w2, b16 = fastest(e, "W1", (MT, MTC)), fastest(e, "W2", (MT, MTC)), fastest(e, "W1", (MT16, MTC16))
        w3, w3_16 = fastest(e, "W3", (MT1, MT1C)), fastest(e, "W3", (MT1_16, MT1C_16))
        ort, ov3 = row(e, "W3", "ONNX Runtime"), row(e, "W3", "OpenVINO")

        def peers(wl):  # ONNX Runtime and OpenVINO: the fastest tools people use
            rs = [r for r in e["rows"] if r["workload"] == wl and r["contender"].startswith(("ONNX", "OpenVINO"))]
            return max(rs, key=lambda r: r["speedup_vs_st"])
        p1, p2 = peers("W1"), peers("W2")
        gate = e["bf16_gate"]
        key = "bf16_compiled" if b16["contender"] == MTC16 else "bf16"
        out += [("W3 fp32 batch-1 latency, exact (goldens within 1e-5 on both paths)", "<= ONNX Runtime's median",
                 f"{w3['contender']}: {w3['median_s'] * 1e3:.2f} ms = {w3['median_s'] / ort['median_s']:.2f}x "
                 f"ONNX Runtime's {ort['median_s'] * 1e3:.2f} ms (OpenVINO {ov3['median_s'] * 1e3:.2f} ms); p90 "
                 f"{w3['p90_s'] * 1e3:.2f} vs {ort['p90_s'] * 1e3:.2f} ms", w3["median_s"] <= ort["median_s"]),
                ("W3 bf16 batch-1 latency", "<= 0.5x minimt fp32",
                 f"{w3_16['contender']}: {w3_16['median_s'] * 1e3:.2f} ms = {w3_16['median_s'] / w3['median_s']:.2f}x",
                 w3_16["median_s"] <= 0.5 * w3["median_s"]),
                ("W2 fp32", "ahead of OpenVINO and ONNX Runtime", f"{w2['contender']}: {w2['speedup_vs_st']:.2f}x "
                 f"sentence-transformers; {p2['contender'].split(',')[0]} {p2['speedup_vs_st']:.2f}x",
                 w2["speedup_vs_st"] > p2["speedup_vs_st"]),
                ("W1 fp32, within 1e-5 of sentence-transformers", "ahead of OpenVINO and ONNX Runtime, and >= 90% "
                 "of the fp32 matmul ceiling", f"{w1['contender']}: {w1['share_of_ceiling']:.0%} of the ceiling, "
                 f"{w1['speedup_vs_st']:.2f}x; {p1['contender'].split(',')[0]} {p1['speedup_vs_st']:.2f}x; diff "
                 f"{w1['max_abs_diff_vs_st']:.1e}", w1["share_of_ceiling"] >= 0.9
                 and w1["speedup_vs_st"] > p1["speedup_vs_st"] and w1["max_abs_diff_vs_st"] <= 1e-5),
                ("W1 bf16, quality gate held", ">= 80% of the bf16 matmul ceiling", f"{b16['contender']}: "
                 f"{b16['share_of_ceiling']:.0%} ({b16['speedup_vs_st']:.2f}x sentence-transformers)",
                 b16["share_of_ceiling"] >= 0.8 and gate[f"spearman_{key}"] >= 82.0
                 and gate[f"min_cos_{key}_vs_fp32"] >= 0.9995)]
        for key, name in (("bf16", MT16), ("bf16_compiled", MTC16)):
            out.append((f"bf16 quality gate (STSb test), {name}", "Spearman >= 82.0, min cosine vs fp32 >= 0.9995",
                        f"{gate[f'spearman_{key}']:.2f}, {gate[f'min_cos_{key}_vs_fp32']:.5f}",
                        gate[f"spearman_{key}"] >= 82.0 and gate[f"min_cos_{key}_vs_fp32"] >= 0.9995))
    if t:
        t1 = max((r for r in t["rows"] if r["workload"] == "T1" and r["precision"] == "fp32"
                  and r["contender"].startswith("minimt")), key=lambda r: r["ratio_vs_hf"])
        out += [("T1 full fine-tuning, fp32", ">= 1.8x the HF loop", f"{t1['contender']}: {t1['ratio_vs_hf']:.2f}x",
                 t1["ratio_vs_hf"] >= 1.8),
                ("T2 heads-only epoch, cache vs none", ">= 10x", f"{t['t2_speedup']:.0f}x", t["t2_speedup"] >= 10)]
        bf = [r for r in t["rows"] if r.get("precision") == "bf16" and r["contender"] == "minimt"]
        if bf and e:
            gain = e["matmul_gflops"]["bfloat16"] / e["matmul_gflops"]["float32"]
            out.append(("T1 with bf16 autocast", ">= 1.5x the HF loop where bf16 matmuls are >= 2x fp32's",
                        f"{bf[0]['ratio_vs_hf']:.2f}x; this CPU's bf16 matmul is {gain:.2f}x its fp32",
                        bf[0]["ratio_vs_hf"] >= 1.5 if gain >= 2 else None))
    if m:
        array_mb = (m["large_n"] - m["small_n"]) * 384 * 4 / 2**20  # what keeping the extra rows in memory would add
        out.append(("encode memory, 100k sentences", f"flat: resident memory after {m['large_n']:,} lines within "
                    f"1/10 of the {array_mb:.0f} MB the rows after line {m['small_n']:,} would take in memory",
                    f"{m['growth_mb']:+.0f} MB ({m['small_mb']:.0f} -> {m['large_mb']:.0f} MB; peak "
                    f"{m['peak_mb']:.0f} MB)", abs(m["growth_mb"]) < array_mb / 10))
        if "loaded_mb" in m:
            out.append(("encode memory, peak", "within 1.5x of the loaded model's resident memory",
                        f"{m['peak_mb'] / m['loaded_mb']:.2f}x ({m['peak_mb']:.0f} MB against {m['loaded_mb']:.0f} MB)",
                        m["peak_mb"] <= 1.5 * m["loaded_mb"]))
    return out


def report_tables(res):
    """Every table of docs/performance.md's bench block, as markdown lines."""
    lines = []
    if "encode" in res:
        e = res["encode"]
        v = e["versions"]
        lines += [f"Measured on {e['cpu']} ({e['threads']} threads): torch {v['torch']}, "
                  f"sentence-transformers {v['sentence_transformers']}, transformers {v['transformers']}, "
                  f"onnxruntime {v['onnxruntime']}, openvino {v['openvino']}. Matmul ceiling of this CPU (a GEMM of "
                  f"the model's shapes): fp32 {e['matmul_gflops']['float32']:.0f} GFLOP/s, bf16 "
                  f"{e['matmul_gflops']['bfloat16']:.0f} GFLOP/s. Medians of {e['repeats']} interleaved repeats.", ""]
        for wl, title in (("W1", "W1: the STSb test sentences"), ("W2", "W2: 500 reviews of 150-256 tokens")):
            rs = [r for r in e["rows"] if r["workload"] == wl]
            lines += [f"**{title}** ({rs[0]['texts']:,} texts, {rs[0]['tokens']:,} tokens)", "",
                      "| contender | median s | tokens/s | speed-up vs sentence-transformers | share of matmul ceiling "
                      "| max abs diff |", "|---|---|---|---|---|---|"]
            lines += [f"| {r['contender']} | {r['median_s']:.2f} | {r['tokens_per_s']:,.0f} | "
                      f"{r['speedup_vs_st']:.2f}x | {r['share_of_ceiling']:.0%} | {r['max_abs_diff_vs_st']:.1e} |"
                      for r in rs]
            lines.append("")
        lines += ["**W3: one sentence per call** (200 STSb sentences)", "",
                  "| contender | median ms | p90 ms | time vs sentence-transformers |", "|---|---|---|---|"]
        lines += [f"| {r['contender']} | {r['median_s'] * 1e3:.2f} | {r['p90_s'] * 1e3:.2f} | {r['time_vs_st']:.2f}x |"
                  for r in e["rows"] if r["workload"] == "W3"]
        lines += ["", "**What compiling costs** (the first calls of a fresh process, over eager first calls: "
                  "cold = inductor's on-disk cache empty, warm = filled by an earlier process): " + "; ".join(
                      f"{d} {c['cold_s']:.0f} s cold, {c['warm_s']:.0f} s warm" for d, c in e["compile_cost"].items())
                  + ".", ""]
        for d, c in e["compile_cost"].items():
            k = c["kernels"]
            lib = ", ".join(f"{n} × `{op}`" for op, n in k["library"].items())
            lines += [f"**What the compiler made of one {d} forward** (inductor's generated code, the graph for batches "
                      f"of 2 or more; {k['graphs']} graphs in all): {k['fused']} calls of {len(k['names'])} "
                      f"generated kernels, and {lib}. The generated kernels: "
                      + ", ".join(f"`{n}`" for n in k["names"]) + ".", ""]
    if "techniques" in res:
        tq = res["techniques"]
        lines += [f"**Each technique on its own** (bench_techniques.py: the encoder with the technique "
                  f"and without it, everything else on; medians of {tq['rounds']} alternating rounds; W3 the median "
                  f"call over 200 sentences, W1 one encode of 2,758, T1 three training steps of batch 32)", "",
                  "| technique | workload | dtype | with | without | time without / with |", "|---|---|---|---|---|---|"]
        unit = {"W3": (1e3, "ms"), "W1": (1, "s"), "T1": (1, "s")}
        for r in tq["rows"]:
            k, u = unit[r["workload"]]
            lines.append(f"| {r['technique']} | {r['workload']} | {r['dtype']} | {r['on_s'] * k:.2f} {u} | "
                         f"{r['off_s'] * k:.2f} {u} | {r['off_s'] / r['on_s']:.2f} |")
        lines.append("")
    if "train" in res:
        lines += res["train"]["table"] + [""]
    lines += profile_table(res)
    if "memory" in res:
        m = res["memory"]
        host = f", on {m['cpu']}" if m.get("cpu") and m["cpu"] != res.get("encode", {}).get("cpu") else ""
        lines += [f"**Memory** (`embed_file`, what `embed --input` runs{host}): resident "
                  f"{m['small_mb']:.0f} MB after {m['small_n']:,} lines, {m['large_mb']:.0f} MB after "
                  f"{m['large_n']:,} lines; peak {m['peak_mb']:.0f} MB (inside a chunk).", ""]
    return lines + targets_table(res)


def targets_table(res):
    """The targets against this run, as markdown lines."""
    verdict = {True: "yes", False: "**no**", None: "does not apply here"}
    return (["**Targets** (from the performance issues; this run's numbers)", "",
             "| workload | target | measured | met |", "|---|---|---|---|"]
            + [f"| {w} | {t} | {m} | {verdict[ok]} |" for w, t, m, ok in targets(res)])


def profile_table(res):
    """bench_profile.py's groups per workload, as markdown lines (none before it has run)."""
    if "profile" not in res:
        return []
    p = res["profile"]
    ceiling = res.get("encode", {}).get("matmul_gflops", {})
    host = "" if p["cpu"] == res.get("encode", {}).get("cpu") else f", on {p['cpu']}"
    lines = [f"**Where the time goes** (bench_profile.py: torch.profiler, each op's own time in groups; host = "
              f"the rest of the wall time: Python, tokenizing, dispatch{host})",
              "", "| workload | dtype | path | wall s | GEMM | attention | element-wise | compiled kernels | host "
              "| GEMMs at GFLOP/s (share of ceiling) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in p["rows"]:
        g, t = r["groups"], r["total_s"]
        gf = "—" if not r["gemm_gflops"] else f"{r['gemm_gflops']:.0f}" + (
            f" ({r['gemm_gflops'] / ceiling[r['dtype']]:.0%})" if r["dtype"] in ceiling else "")
        lines.append(f"| {r['workload']} | {r['dtype']} | {r['path']} | {t:.3f} | " + " | ".join(
            f"{g[k] / t:.0%}" for k in ("GEMM", "attention", "element-wise", "compiled", "host")) + f" | {gf} |")
    return lines + [""]


def summary_table(res):
    """The main README's Performance table: minimt against sentence-transformers (encode) and an HF loop
    (training), with the fastest other tool of each workload beside it."""
    e, t = res.get("encode"), res.get("train")
    if not e or not t:
        return ["(no results yet: run `make bench`)"]
    w1, w2, w3 = row(e, "W1", MT), row(e, "W2", MT), row(e, "W3", MT1)
    c1, c2, c3 = row(e, "W1", MTC), row(e, "W2", MTC), row(e, "W3", MT1C)

    def best_peer(wl, key, best):  # the fastest tool that is neither minimt nor the baseline, named
        peers = [r for r in e["rows"] if r["workload"] == wl and not r["contender"].startswith(("minimt", ST))]
        r = best(peers, key=lambda r: r[key])
        return f"{r['contender'].split(',')[0]} {r[key]:.2f}x"

    t1 = {r["contender"]: r for r in t["rows"] if r["workload"] == "T1" and r.get("precision") == "fp32"}
    missed = [f"{w}: {target}" for w, target, _, ok in targets(res) if ok is False]
    return [f"`make bench` on {e['cpu']}, {e['threads']} threads, fp32; minimt eager (its default) and compiled "
            f"(`compile=True`):", "",
            "| workload | minimt | compiled | compared with | fastest other tool |", "|---|---|---|---|---|",
            f"| W1: {w1['texts']:,} STSb test sentences | {w1['speedup_vs_st']:.2f}x the speed | "
            f"{c1['speedup_vs_st']:.2f}x | sentence-transformers `encode` | {best_peer('W1', 'speedup_vs_st', max)} |",
            f"| W2: {w2['texts']:,} reviews of 150-256 tokens | {w2['speedup_vs_st']:.2f}x the speed | "
            f"{c2['speedup_vs_st']:.2f}x | sentence-transformers `encode` | {best_peer('W2', 'speedup_vs_st', max)} |",
            f"| W3: one sentence per call | {w3['time_vs_st']:.2f}x the time | {c3['time_vs_st']:.2f}x | "
            f"sentence-transformers `encode` | {best_peer('W3', 'time_vs_st', min)} |",
            f"| T1: full fine-tuning, batch 32 | {t1['minimt']['ratio_vs_hf']:.2f}x the samples/s | "
            f"{t1[MTC]['ratio_vs_hf']:.2f}x | a transformers BertModel loop | — |", "",
            "Targets this run missed: " + ("; ".join(missed) if missed else "none") + "."]


def write_between(path, name, lines):
    """Replace what stands between <!-- name:start --> and <!-- name:end --> in path."""
    text = path.read_text(encoding="utf-8")
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{path} has no {start} ... {end} markers to put the tables between")
    head, rest = text.split(start, 1)
    path.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + rest.split(end, 1)[1], encoding="utf-8")


def write_readme():
    """Rewrite the generated tables from results.json into docs/performance.md: the summary (bench-summary markers)
    and every table (bench markers); and into this folder's README, the targets and the profile that bounds them
    (bench-targets markers). The numbers are generated, never typed."""
    res = json.loads(RESULTS.read_text())
    report = ROOT / "docs" / "performance.md"
    write_between(report, "bench", report_tables(res))
    write_between(report, "bench-summary", summary_table(res))
    write_between(HERE / "README.md", "bench-targets", targets_table(res) + [""] + profile_table(res))


if __name__ == "__main__":
    write_readme()
