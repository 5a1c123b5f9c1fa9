"""python -m minimt: embed, similarity and --help, run as a user would run them."""
import json
import subprocess
import sys

import numpy as np


def run(*args):
    r = subprocess.run([sys.executable, "-m", "minimt", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_help_lists_commands():
    out = run("--help")
    for cmd in ["embed", "similarity", "sts", "weights", "data"]:
        assert cmd in out
    assert "--output" in run("embed", "--help")


def test_similarity(minilm_dir):
    assert run("similarity", "I am eating apple", "I like fruits", "--model", str(minilm_dir)).strip() == "0.5398"


def test_embed_print_and_npy(minilm_dir, minilm, tmp_path):
    lines = run("embed", "hello world", "ünïcode ✓", "--model", str(minilm_dir)).splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["text"] for r in rows] == ["hello world", "ünïcode ✓"] and len(rows[0]["embedding"]) == 384
    assert np.abs(np.array(rows[0]["embedding"]) - minilm.encode("hello world")).max() < 1e-6
    path = tmp_path / "e.npy"
    run("embed", "hello world", "second text", "--model", str(minilm_dir), "--output", str(path))
    arr = np.load(path)
    assert arr.shape == (2, 384) and arr.dtype == np.float32
    assert np.abs(arr - minilm.encode(["hello world", "second text"])).max() < 1e-6


def test_bad_model_path_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "minimt", "similarity", "a", "b", "--model", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "has no config.json" in r.stderr
