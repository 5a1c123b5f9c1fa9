"""Embedding a text file: streaming into a memory-mapped .npy, on one process or two under torchrun.
(Kills, full disks and bad --output / --chunk: test_atomic_outputs.py.)"""
import subprocess
import sys

import numpy as np

from helpers import assert_close
from minimt.tools.corpus import read_chunks

WORDS = "the a cat dog runs quickly over under market fell rose today guitar plays man woman café 🙂".split()


def corpus(path, n=300):
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, size=rng.integers(0, 40))) for _ in range(n)]
    lines[7] = ""                                  # an empty line is still a row
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def run(*args, torchrun=False):
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun else []
    return subprocess.run([sys.executable, *launcher, "-m", "minimt", "embed", *args],
                          capture_output=True, text=True, timeout=300)


def test_read_chunks_keeps_one_row_per_line(tmp_path):
    f = tmp_path / "c.txt"
    f.write_bytes(b"one\r\n\r\nthree\nfour")
    assert list(read_chunks(f, size=3)) == [(0, ["one", "", "three"]), (3, ["four"])]


def test_two_processes_write_what_one_encode_gives(tmp_path, minilm, minilm_dir):
    lines = corpus(tmp_path / "c.txt")
    want = minilm.encode(lines)
    np.save(tmp_path / "two.npy", np.zeros((2, 2), np.float32))  # an earlier output, replaced in one rename
    r = run("--input", str(tmp_path / "c.txt"), "--output", str(tmp_path / "two.npy"), "--chunk", "64",
            "--model", str(minilm_dir), torchrun=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("wrote 300 x 384") == 1                 # one rank reports
    assert "rank 1: lines 64..127" in r.stderr                     # chunks really were dealt to both ranks
    assert_close(np.load(tmp_path / "two.npy"), want, 1e-6, "2 processes (chunks of 64) vs encode()")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "two.npy"]  # both ranks wrote one temp, now gone


def test_one_process_and_errors(tmp_path, minilm, minilm_dir):
    lines = corpus(tmp_path / "c.txt", n=50)
    r = run("--input", str(tmp_path / "c.txt"), "--output", str(tmp_path / "one.npy"), "--model", str(minilm_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    assert_close(np.load(tmp_path / "one.npy"), minilm.encode(lines), 1e-6, "embed --input vs encode()")
    r = run("--input", str(tmp_path / "c.txt"))
    assert r.returncode != 0 and "needs --output" in r.stderr
    (tmp_path / "empty.txt").write_text("")
    r = run("--input", str(tmp_path / "empty.txt"), "--output", str(tmp_path / "e.npy"), "--model", str(minilm_dir))
    assert r.returncode != 0 and "is empty" in r.stderr
