"""python -m minimt plot: a PNG of a run's curves, from its metrics.jsonl; a clear error without matplotlib. The
study figure and the curves: no text drawn on another, and the lr panel names its parameter groups."""
import json
import subprocess
import sys

import pytest

from minimt.errors import UserError
from minimt.tools.plot import plot_run, plot_study, run_figure, study_figure


@pytest.fixture(autouse=True)
def close_figures():
    """run_figure and study_figure hand back open figures; pyplot keeps each until it is closed."""
    yield
    if sys.modules.get("matplotlib.pyplot"):
        sys.modules["matplotlib.pyplot"].close("all")


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


def study_row(trainable, domain, sentiment, sts, start=None, **pair_tasks):
    """A row as examples/05_study.py writes it to runs/study/results.json."""
    test = {t: {"accuracy": a, "macro_f1": a - 0.002} for t, a in (("domain", domain), ("sentiment", sentiment))
            if a is not None}
    row = {"trainable": trainable, "test": {**test, **pair_tasks}, "sts_spearman": sts}
    return row if start is None else {**row, "trainable_start": start}


FULL = 22_568_071
STSB, AG = {"stsb": {"spearman": 0.85, "pearson": 0.85}}, {"ag_retrieval": {"recall_at_1": 0.77, "mrr": 0.83}}
# the rows and the value ranges of docs/study.md: eleven of sixteen rows within 3,000 parameters of 2.26e7
STUDY = {
    "zero_shot": study_row(0, 0.850, 0.631, 82.03),
    "heads_cached": study_row(2_695, 0.954, 0.821, 82.03),
    "top2": study_row(3_551_623, 0.952, 0.832, 69.90),
    "full": study_row(FULL, 0.957, 0.873, 65.01),
    "full_llrd": study_row(FULL, 0.955, 0.866, 68.29),
    "gradual": study_row(FULL, 0.958, 0.875, 71.87, start=2_695),
    "continual": study_row(22_566_146, 0.271, 0.870, 42.63),
    "joint_stsb": study_row(FULL, 0.945, 0.841, 85.71, **STSB),
    "joint_stsb_w02": study_row(FULL, 0.960, 0.864, 85.14, **STSB),
    "joint_stsb_w005": study_row(FULL, 0.962, 0.875, 83.49, **STSB),
    "joint_stsb_w005_gradual": study_row(FULL, 0.950, 0.839, 79.71, **STSB),
    "joint_agnews": study_row(FULL, 0.952, 0.845, 80.70, **AG),
    "agnews_contrastive": study_row(22_565_376, None, None, 81.28, **AG),
    "stsb_alone": study_row(22_565_376, None, None, 85.73, **STSB),
    "stsb_top2": study_row(3_548_928, None, None, 84.94, **STSB),
    "untrained": study_row(0, None, None, 82.03, **STSB, **AG),
}
DISCUSSED = ("heads_cached", "top2", "full", "gradual", "continual", "joint_stsb_w005")


def drawn_texts(fig, monkeypatch):
    """Every piece of text the renderer drew (tick labels, annotations, titles, legend entries) with its box in
    pixels. Recorded while drawing: a Text that exists but is not drawn (a tick outside the axis) is no text."""
    import matplotlib.text
    drawn, draw = [], matplotlib.text.Text.draw

    def record(text, renderer):
        drawn.append(text)
        return draw(text, renderer)
    monkeypatch.setattr(matplotlib.text.Text, "draw", record)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [t for t in drawn if t.get_visible() and t.get_text().strip()], renderer


def inside(box, outer):
    return outer.x0 <= box.x0 and box.x1 <= outer.x1 and outer.y0 <= box.y0 and box.y1 <= outer.y1


def assert_no_text_overlaps(fig, monkeypatch):
    """No two drawn texts share a pixel, within an axes or across axes; none is cut off at the figure's edge; and
    a text written at a data point (an annotation) stays inside its own axes, not across its neighbour's frame."""
    import matplotlib.text
    texts, renderer = drawn_texts(fig, monkeypatch)
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    overlaps = [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:] if box_a.overlaps(box_b)]
    assert not overlaps, f"{len(overlaps)} pairs of texts overlap, e.g. {overlaps[:5]}"
    cut_off = [t for t, box in boxes if not inside(box, fig.bbox)]
    assert not cut_off, f"texts cut off at the figure's edge: {cut_off}"
    astray = [t.get_text() for t, (_, box) in zip(texts, boxes)
              if isinstance(t, matplotlib.text.Annotation) and not inside(box, t.axes.bbox)]
    assert not astray, f"annotations outside their axes: {astray}"
    return [t for t, _ in boxes]


def test_the_study_figure_draws_no_label_on_another(monkeypatch):
    fig = study_figure(STUDY, highlight=DISCUSSED)
    texts = assert_no_text_overlaps(fig, monkeypatch)
    assert set(STUDY) <= set(texts)  # every row named once, as a row label
    assert {"0.271", "2,695 → 22.6M", "42.63", "discussed in the README and docs/study.md"} <= set(texts)
    assert texts.count("—") == 2 * 4  # no domain or sentiment accuracy in the four rows without heads


def test_the_rows_the_readme_discusses_stand_out():
    fig = study_figure(STUDY, highlight=DISCUSSED + ("not_run_yet",))  # a partial study lacks some rows
    bold = {t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_fontweight() == "bold"}
    assert bold == set(DISCUSSED)


def test_the_study_figure_writes_a_png(tmp_path):
    png = plot_study(STUDY, tmp_path / "study.png", highlight=DISCUSSED)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["study.png"]


def test_a_study_row_without_a_number_is_named():
    with pytest.raises(UserError, match=r"study row gradual: trainable is '2,695 → 22,568,071'; the figure needs a "
                                         r"whole number"):
        study_figure({**STUDY, "gradual": {**STUDY["gradual"], "trainable": "2,695 → 22,568,071"}})


def lr_run(d):
    """A run as train() logs it with layer_decay and gradual unfreezing: every unit has a rate of its own except the
    two heads, a unit's no_decay group shares its rate, and layer 0 opens at step 6."""
    rows = []
    for s in range(1, 11):
        lr = {"head.topic": 2e-3 / s, "head.mood": 2e-3 / s, "layer.1": 1e-4 / s, "layer.1/no_decay": 1e-4 / s}
        if s >= 6:
            lr |= {"layer.0": 8e-5 / s, "layer.0/no_decay": 8e-5 / s}
        rows.append({"step": s, "epoch": s / 10, "split": "train", "loss": 1.0, "lr": lr})
    d.mkdir()
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_the_lr_panel_names_its_parameter_groups(tmp_path, monkeypatch):
    fig = run_figure(lr_run(tmp_path / "run"))
    ax_lr = fig.axes[1]
    assert [t.get_text() for t in ax_lr.get_legend().get_texts()] == ["heads topic, mood", "encoder layer 1",
                                                                      "encoder layer 0"]
    assert [len(line.get_xdata()) for line in ax_lr.get_lines()] == [10, 10, 5]  # layer 0 from the step it opened
    assert_no_text_overlaps(fig, monkeypatch)


def test_the_lr_legend_of_a_plain_run(tmp_path):
    fig = run_figure(write_run(tmp_path / "run"))
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["encoder layer 0", "head t"]
