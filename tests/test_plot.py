"""python -m minimt plot: a PNG of a run's curves, from its metrics.jsonl; a clear error without matplotlib."""
import json
import subprocess
import sys

import pytest

from minimt.errors import UserError
from minimt.tools.plot import plot_run


def write_run(d):
    rows = [{"step": s, "epoch": s / 10, "split": "train", "loss": 2.0 / s, "lr": {"layer.0": 1e-4 / s, "head.t": 1e-3}}
            for s in range(1, 11)]
    rows += [{"step": s, "split": "dev", "task": t, "accuracy": 0.5 + s / 40, "macro_f1": 0.4 + s / 40}
             for s in (5, 10) for t in ("topic", "mood")]
    rows += [{"step": 10, "split": "test", "task": "topic", "accuracy": 0.7, "macro_f1": 0.6, "checkpoint": "best"}]
    d.mkdir()
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_plot_writes_a_png(tmp_path):
    run = write_run(tmp_path / "run")
    out = subprocess.run([sys.executable, "-m", "minimt", "plot", str(run)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    png = run / "curves.png"
    assert out.stdout.strip() == f"wrote {png}" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000 and not list(run.glob(".*"))  # a real picture, no temporary file left


def test_plot_errors_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl is missing; plot takes a training run's out_dir"):
        plot_run(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    with pytest.raises(UserError, match=r"pip install 'minimt\[plot\]'"):
        plot_run(write_run(tmp_path / "run"))


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_plot_writes_the_format_its_suffix_names(tmp_path, suffix, magic):
    out = plot_run(write_run(tmp_path / "run"), tmp_path / f"curves{suffix}")
    assert out.read_bytes().startswith(magic)


def test_plot_refuses_a_suffix_it_cannot_write_before_reading_anything(tmp_path):
    with pytest.raises(UserError, match=r"curves.jpg: a plot is written as .png, .pdf or .svg"):
        plot_run(tmp_path / "no-run", tmp_path / "curves.jpg")  # the missing run is not even looked at
    assert list(tmp_path.iterdir()) == []


def test_plot_study_writes_a_png(tmp_path):
    from minimt.tools.plot import plot_study
    rows = {"zero_shot": {"trainable": 0, "test": {"topic": {"accuracy": 0.8}}, "sts_spearman": 82.0},
            "full": {"trainable": 22_000_000, "test": {"topic": {"accuracy": 0.9}, "sts": {"spearman": 84.0}},
                     "sts_spearman": 66.0}}
    png = plot_study(rows, tmp_path / "study.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["study.png"]


@pytest.mark.parametrize("content, message", [
    (b'{"split": "train", "step": 1, "loss": 0.5, "lr": {"0": 1e-4}}\n{"split": "tr',
     r"metrics.jsonl:2: not valid JSON"),
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", r"metrics.jsonl:1: not UTF-8 text"),
    (b'[1, 2]\n', r"metrics.jsonl:1: a JSON list, not an object"),
    (b'{"split": "train", "step": 1}\n', r"metrics.jsonl:1: a train line needs step, loss, lr"),
    (b'{"split": "dev", "step": 1, "task": "t"}\n', r"metrics.jsonl:1: a dev line needs step, task, accuracy"),
])
def test_a_broken_metrics_file_is_named_with_its_line(tmp_path, content, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_bytes(content)
    with pytest.raises(UserError, match=message):
        plot_run(run)
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]
