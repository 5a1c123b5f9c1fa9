"""Memory of embedding a corpus (minimt.corpus.embed_file, what `python -m minimt embed --input` runs): flat in N.

A corpus of 100,000 short real sentences (the first six words of STSb sentences, cycled) is embedded in a fresh
process that reads its own resident memory (/proc/self/statm) after every 4,096-line chunk, and its peak (ru_maxrss)
at the end. Flat means: the memory after the last chunk is what it was after the first 10,000 lines; and the peak
stays within 1.5x of the resident memory of the loaded model (after one sentence). Writes the
"memory" part of tests/bench/results.json and rewrites the README's performance tables.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import MINILM, cpu_name, save_results, write_readme
from minimt.evaluate import read_sts

CHILD = """
import json, resource, sys
from minimt import SentenceEncoder
from minimt.tools.corpus import embed_file
enc = SentenceEncoder.from_pretrained(sys.argv[1])
enc.encode(["one sentence first, so the loaded size includes what the first call sets up"])
loaded = int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
trace = []
def log(msg):  # called after each chunk is written
    trace.append([int(msg.split("..")[1].split()[0]) + 1, int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20])
embed_file(enc, sys.argv[2], sys.argv[3], log=log)
print(json.dumps({"trace": trace, "loaded_mb": loaded,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(n=100_000, early=10_000):
    s1, s2, _ = read_sts("test")
    short = [" ".join(s.split()[:6]) for s in s1 + s2]
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "corpus.txt"
        src.write_text("\n".join(short[i % len(short)] for i in range(n)) + "\n", encoding="utf-8")
        out = subprocess.run([sys.executable, "-c", CHILD, str(MINILM), str(src), str(Path(d) / "corpus.npy")],
                             check=True, capture_output=True, text=True).stdout
    res = json.loads(out.splitlines()[-1])
    small = next(mb for lines, mb in res["trace"] if lines >= early)
    result = {"small_n": next(lines for lines, _ in res["trace"] if lines >= early), "large_n": n,
              "small_mb": small, "large_mb": res["trace"][-1][1], "peak_mb": res["peak_mb"], "trace": res["trace"],
              "loaded_mb": res["loaded_mb"], "cpu": cpu_name()}
    result["growth_mb"] = result["large_mb"] - result["small_mb"]
    print(f"resident after {result['small_n']:,} lines {result['small_mb']:.0f} MB, after {n:,} lines "
          f"{result['large_mb']:.0f} MB ({result['growth_mb']:+.0f} MB); peak {result['peak_mb']:.0f} MB")
    save_results("memory", result)
    write_readme()


if __name__ == "__main__":
    main()
