"""Outputs appear whole or not at all (minimt/io/files.py): a kill -9, a full disk, a read-only directory or a wrong
--output leaves the earlier output byte for byte, and a failure says what to do in one line."""
import ctypes
import errno
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import assert_close
from minimt import SentenceEncoder
from minimt.io import files
from minimt.tools.corpus import embed_file

LINES = 3000
CHUNK = 200  # 15 chunks: room to kill between them


@pytest.fixture
def work(tmp_path):
    """A corpus of 3000 lines and an earlier output, out.npy, that every failure must leave as it was."""
    rng = np.random.default_rng(0)
    words = "the a cat dog runs quickly over under market fell rose today guitar plays man woman café 🙂".split()
    lines = [" ".join(rng.choice(words, size=rng.integers(0, 30))) for _ in range(LINES)]
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    np.save(tmp_path / "out.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    return tmp_path, lines, (tmp_path / "out.npy").read_bytes()


def minimt(*args, cwd, preexec_fn=None):
    return subprocess.Popen([sys.executable, "-m", "minimt", *args], cwd=cwd, preexec_fn=preexec_fn, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def visible(d):
    """The names a user sees (a kill -9 may leave a hidden .out.npy.tmp-*, never a half-written out.npy)."""
    return sorted(p.name for p in d.iterdir() if not p.name.startswith("."))


def temps(d):
    return sorted(p.name for p in d.iterdir() if ".tmp-" in p.name)


def wait_for_temp(proc, d):
    while not temps(d):
        assert proc.poll() is None, f"embed ended before creating its temp file: {proc.stderr.read()[-2000:]}"
        time.sleep(0.01)


def wait_for_chunks(k):
    def wait(proc, d):
        for _ in range(k):
            line = proc.stderr.readline()
            assert line.startswith("rank 0: lines"), f"expected progress, got {line!r}{proc.stderr.read()[-2000:]}"
    return wait


KILL_POINTS = {"temp created, no rows": wait_for_temp, "after 1 chunk": wait_for_chunks(1),
               "after 8 of 15 chunks": wait_for_chunks(8), "after the last chunk": wait_for_chunks(15)}


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_9_keeps_the_earlier_output(work, tiny_checkpoint, point):
    d, lines, old = work
    proc = minimt("embed", "--input", "c.txt", "--output", "out.npy", "--chunk", str(CHUNK),
                  "--model", str(tiny_checkpoint), cwd=d)
    try:
        KILL_POINTS[point](proc, d)
        proc.kill()  # SIGKILL: no handler, no finally, no flush
    finally:
        proc.wait(timeout=60)
    assert visible(d) == ["c.txt", "out.npy"]
    assert all(name.startswith(".out.npy.tmp-") for name in temps(d))  # what a kill can leave: hidden, named
    got = (d / "out.npy").read_bytes()
    if point == "after the last chunk" and got != old:  # the kill lost the race with the rename: complete and new
        encoder = SentenceEncoder.from_pretrained(tiny_checkpoint)
        assert_close(np.load(d / "out.npy"), encoder.encode(lines), 1e-6, f"out.npy after a kill {point}")
    else:
        assert got == old, f"kill -9 {point} changed the earlier out.npy"


@pytest.mark.slow
def test_finished_runs_replace_the_output_whole(work, tiny_checkpoint):
    """Two runs at once into one out.npy: each writes its own temp (pid and a random part in the name), the later
    rename wins, and out.npy is one run's complete output; no temp is left, hidden or not."""
    d, lines, _ = work
    procs = [minimt("embed", "--input", "c.txt", "--output", "out.npy", "--chunk", "1000",
                    "--model", str(tiny_checkpoint), cwd=d) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        assert out == f"wrote {LINES} x 32 embeddings of c.txt to out.npy\n"
    assert sorted(p.name for p in d.iterdir()) == ["c.txt", "out.npy"]
    encoder = SentenceEncoder.from_pretrained(tiny_checkpoint)
    assert_close(np.load(d / "out.npy"), encoder.encode(lines), 1e-6, "embed --input vs encode()")
    proc = minimt("embed", "one", "two", "--output", "two", "--model", str(tiny_checkpoint), cwd=d)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert out == "wrote 2 x 32 embeddings to two\n"  # exactly the name given: np.save would have made two.npy
    assert_close(np.load(d / "two"), encoder.encode(["one", "two"]), 1e-6, "embed TEXTS --output vs encode()")


def file_size_limit(n):
    """preexec_fn: the child may not make a file longer than n bytes (a full disk, for one process)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))


def without_root_override():
    """preexec_fn: root writes into a read-only directory regardless; drop the two capabilities that let it from
    the bounding set, so the child (after exec) is refused like any user. Linux only; a no-op for other users."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


INPUT = ["--input", "c.txt", "--chunk", str(CHUNK)]
# name: (embed arguments, preexec_fn, exit code, the error line)
FAILURES = {
    "full disk, --input": ([*INPUT, "--output", "out.npy"], file_size_limit(100_000), 1,
                           "minimt: error: out.npy would pass the file size limit (needs 384,128 bytes; see ulimit -f)"
                           ": raise the limit or choose another --output"),
    "full disk, texts": (["one", "two", "--output", "out.npy"], file_size_limit(300), 1,
                         "minimt: error: out.npy would pass the file size limit (needs 384 bytes; see ulimit -f): "
                         "raise the limit or choose another --output"),
    "read-only directory, --input": ([*INPUT, "--output", "ro/out.npy"], without_root_override, 1,
                                     "minimt: error: cannot create files in ro (Permission denied): make it writable "
                                     "or choose another --output"),
    "read-only directory, texts": (["one", "--output", "ro/out.npy"], without_root_override, 1,
                                   "minimt: error: cannot create files in ro (Permission denied): make it writable "
                                   "or choose another --output"),
    "output is a directory, --input": ([*INPUT, "--output", "ro"], None, 1,
                                       "minimt: error: ro is a directory, not a file: choose another --output"),
    "output is a directory, texts": (["one", "--output", "ro"], None, 1,
                                     "minimt: error: ro is a directory, not a file: choose another --output"),
    "missing directory": (["one", "--output", "nowhere/out.npy"], None, 1,
                          "minimt: error: directory nowhere does not exist: create it or choose another --output"),
    "--chunk 0": (["--input", "c.txt", "--output", "new.npy", "--chunk", "0"], None, 2,
                  "minimt: error: --chunk must be a positive number of lines, got 0 (default: 4096)"),
    "--chunk -1": (["--input", "c.txt", "--output", "new.npy", "--chunk", "-1"], None, 2,
                   "minimt: error: --chunk must be a positive number of lines, got -1 (default: 4096)"),
}


@pytest.mark.parametrize("case", FAILURES)
def test_a_failure_says_why_in_one_line_and_keeps_the_earlier_output(work, tiny_checkpoint, case):
    d, _, old = work
    args, preexec_fn, code, message = FAILURES[case]
    (d / "ro").mkdir()
    (d / "ro" / "out.npy").write_bytes(old)
    (d / "ro").chmod(0o555)
    try:
        proc = minimt("embed", *args, "--model", str(tiny_checkpoint), cwd=d, preexec_fn=preexec_fn)
        out, err = proc.communicate(timeout=300)
    finally:
        (d / "ro").chmod(0o755)
    assert "Traceback" not in err, err[-3000:]
    assert (proc.returncode, err.splitlines()[-1]) == (code, message), err[-3000:]
    if code == 1:
        assert len(err.splitlines()) == 1, err  # the message and nothing else (argparse's usage line: code 2)
    assert out == ""
    assert (d / "out.npy").read_bytes() == old and (d / "ro" / "out.npy").read_bytes() == old
    assert sorted(p.name for p in d.iterdir()) == ["c.txt", "out.npy", "ro"]  # nothing new, not even a temp
    assert sorted(p.name for p in (d / "ro").iterdir()) == ["out.npy"]


def no_space(fd, offset, size):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_is_found_before_the_first_row(work, tiny_encoder, monkeypatch):
    """ENOSPC at the reservation, before any text is encoded; the library call leaves out.npy as it was."""
    d, _, old = work
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(OSError, match=r"^no space left on .*out.npy \(needs 384,128 bytes\): free space or choose "
                                      r"another --output$"):
        embed_file(tiny_encoder, d / "c.txt", d / "out.npy", chunk=CHUNK, log=lambda msg: pytest.fail(msg))
    assert (d / "out.npy").read_bytes() == old and sorted(p.name for p in d.iterdir()) == ["c.txt", "out.npy"]


@pytest.mark.parametrize("chunk", [0, -1, 2.5])
def test_embed_file_rejects_a_bad_chunk_before_making_a_file(work, tiny_encoder, chunk):
    d, _, _ = work
    with pytest.raises(ValueError, match=f"chunk must be a positive number of lines, got {chunk}"):
        embed_file(tiny_encoder, d / "c.txt", d / "new.npy", chunk=chunk)
    assert not (d / "new.npy").exists() and not temps(d)


def test_a_pair_is_renamed_only_when_both_are_written(tmp_path, monkeypatch):
    """evaluate's metrics.json and predictions.jsonl: if the second cannot be written, the first stays old too."""
    a, b = tmp_path / "metrics.json", tmp_path / "predictions.jsonl"
    a.write_text("old metrics\n")
    b.write_text("old predictions\n")
    real = os.posix_fallocate
    monkeypatch.setattr(os, "posix_fallocate", lambda fd, off, n: no_space(fd, off, n) if n > 100 else real(fd, off, n))
    with pytest.raises(OSError, match=r"no space left on .*predictions.jsonl \(needs 200 bytes\): free space or "
                                      r"choose another --out"):
        files.write_all({a: "new metrics\n", b: "x" * 199 + "\n"}, option="--out")
    assert (a.read_text(), b.read_text()) == ("old metrics\n", "old predictions\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "predictions.jsonl"]
    files.write_all({a: "new metrics\n", b: "new predictions\n"}, option="--out")
    assert (a.read_text(), b.read_text()) == ("new metrics\n", "new predictions\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "predictions.jsonl"]


@pytest.fixture(scope="module")
def trained(tiny_checkpoint, data_file, tmp_path_factory):
    """A one-epoch checkpoint of the tiny model on data_file: something predict and evaluate can load."""
    from minimt.train import TrainConfig, train
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(sources=[{"path": str(data_file), "text": "text", "labels": {"topic": "topic", "mood": "mood"}}],
                      model=str(tiny_checkpoint), epochs=1, batch_size=8, lr=1e-3, eval_every=5, eval_batch_size=16,
                      out_dir=str(out), seed=3))
    return out / "best"


@pytest.mark.slow
def test_predict_output_and_evaluate_are_atomic(trained, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "great tennis match"}\n{"text": "hate my phone"}\n')

    def run(*args, preexec_fn=None):
        return minimt(*args, cwd=tmp_path, preexec_fn=preexec_fn).communicate(timeout=300)

    printed, err = run("predict", str(trained), "--jsonl", "in.jsonl")
    assert printed.count("\n") == 2, err[-3000:]
    out, err = run("predict", str(trained), "--jsonl", "in.jsonl", "--output", "p.jsonl")
    assert out == "wrote 2 predictions of in.jsonl to p.jsonl\n", err[-3000:]
    assert (tmp_path / "p.jsonl").read_text() == printed  # the file holds what stdout would have shown
    out, err = run("predict", str(trained), "--jsonl", "in.jsonl", "--output", "p.jsonl",
                   preexec_fn=file_size_limit(10))
    assert err.splitlines() == ["minimt: error: p.jsonl would pass the file size limit (needs "
                                f"{len(printed.encode())} bytes; see ulimit -f): raise the limit or choose another "
                                "--output"]
    assert (tmp_path / "p.jsonl").read_text() == printed
    _, err = run("predict", str(trained), "one text", "--output", "p.jsonl")
    assert err == "minimt: error: predict --output needs --jsonl FILE: texts given on the command line are printed\n"

    ev = tmp_path / "ev"
    out, err = run("evaluate", str(trained), "--out", "ev")
    assert "wrote ev/metrics.json and ev/predictions.jsonl" in out, err[-3000:]
    metrics, preds = (ev / "metrics.json").read_bytes(), (ev / "predictions.jsonl").read_bytes()
    assert len(metrics) < len(preds)
    (ev / "metrics.json").write_text("old\n")
    (ev / "predictions.jsonl").write_text("old\n")
    _, err = run("evaluate", str(trained), "--out", "ev", preexec_fn=file_size_limit(len(metrics)))
    assert err.splitlines()[-1].startswith("minimt: error: ev/predictions.jsonl would pass the file size limit"), err
    assert "choose another --out" in err and "Traceback" not in err
    assert (ev / "metrics.json").read_text() == (ev / "predictions.jsonl").read_text() == "old\n"  # neither renamed
    assert sorted(p.name for p in ev.iterdir()) == ["metrics.json", "predictions.jsonl"]
