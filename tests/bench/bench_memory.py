"""Peak memory of embedding a corpus (`python -m minimt embed --input`): it must not grow with the corpus.

Two corpora of short real sentences (the first six words of STSb sentences, cycled), 10,000 and 100,000 lines, each
embedded in a fresh process; the peak resident memory of each is read from the kernel (ru_maxrss). Writes the
"memory" part of tests/bench/results.json and rewrites the README's performance tables.
"""
import subprocess
import sys
import tempfile
from pathlib import Path

from common import MINILM, save_results, write_readme
from minimt.similarity import read_sts

PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_mb(src, dst):
    cmd = [sys.executable, "-m", "minimt", "embed", "--input", str(src), "--output", str(dst), "--model", str(MINILM)]
    out = subprocess.run([sys.executable, "-c", PEAK, *cmd], check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1]) / 1024  # ru_maxrss is in KiB on Linux


def main(small=10_000, large=100_000):
    s1, s2, _ = read_sts("test")
    short = [" ".join(s.split()[:6]) for s in s1 + s2]
    result = {"small_n": small, "large_n": large}
    with tempfile.TemporaryDirectory() as d:
        for key, n in (("small", small), ("large", large)):
            src = Path(d) / f"{n}.txt"
            src.write_text("\n".join(short[i % len(short)] for i in range(n)) + "\n", encoding="utf-8")
            result[f"{key}_mb"] = peak_mb(src, Path(d) / f"{n}.npy")
            print(f"{n:>7,} lines: peak RSS {result[f'{key}_mb']:.0f} MB")
    result["growth_mb"] = result["large_mb"] - result["small_mb"]
    print(f"growth {result['growth_mb']:+.0f} MB (the 100k x 384 float32 output alone is 154 MB, on disk)")
    save_results("memory", result)
    write_readme()


if __name__ == "__main__":
    main()
