"""Pictures: a training run's curves, and the study's cost/benefit figure.

    python -m minimt plot runs/train            # -> runs/train/curves.png (make train draws it too)
    make study                                  # -> examples/study.png (plot_study), shown in the README

plot_run reads the run's metrics.jsonl (train.py writes a "train" line every log_every steps and a "dev" line per
task at each evaluation). matplotlib is an optional extra, imported only here: pip install 'minimt[plot]'.
"""
import io
from pathlib import Path

from minimt.data import read_jsonl
from minimt.errors import UserError
from minimt.io import files

FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}  # what the file's suffix promises is what it holds


def pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only, no window: works on servers and in CI
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plotting needs matplotlib, an optional extra: pip install 'minimt[plot]' "
                        "(or pip install matplotlib)") from None
    return plt


def check_out(out):
    """The format the suffix of `out` names, or a UserError, before any work is done."""
    fmt = FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise UserError(f"{out}: a plot is written as .png, .pdf or .svg; give --out one of those suffixes")
    return fmt


def save(fig, out):
    """The figure at `out` in the format its suffix names, whole or not at all (files.write_all)."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=check_out(out), dpi=100)
    finally:
        pyplot().close(fig)
    files.write_all({Path(out): buf.getvalue()}, "--out")
    return Path(out)


def plot_run(run_dir, out=None):
    """Write the run's curves (default: <run_dir>/curves.png), atomically; returns its path."""
    plt = pyplot()
    run_dir = Path(run_dir)
    out = out or run_dir / "curves.png"
    check_out(out)
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; plot takes a training run's out_dir, e.g. runs/train")
    train, dev = [], []
    for n, r in read_jsonl(path):  # names file:line for a cut-off, binary or non-object line
        fields = {"train": ("step", "loss", "lr"), "dev": ("step", "task", "accuracy", "macro_f1")}.get(r.get("split"))
        if fields is None or "checkpoint" in r:
            continue  # the final test lines and any other split are not curves
        bad_lr = r["split"] == "train" and not isinstance(r.get("lr"), dict)
        if any(k not in r for k in fields) or not isinstance(r["step"], (int, float)) or bad_lr:
            raise UserError(f"{path}:{n}: a {r['split']} line needs {', '.join(fields)} (lr a mapping of group to "
                            f"rate); this one has {sorted(r)}: not a metrics.jsonl that train() wrote")
        (train if r["split"] == "train" else dev).append(r)
    if not train and not dev:
        raise UserError(f"{path} has no train or dev lines to plot")

    fig, (ax_loss, ax_lr, ax_dev) = plt.subplots(1, 3, figsize=(15, 4))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue")
    ax_loss.set(title="training loss", xlabel="step")
    for name in (train[0]["lr"] if train else {}):  # one line per parameter group
        ax_lr.plot([r["step"] for r in train], [r["lr"][name] for r in train], label=name)
    ax_lr.set(title="learning rate per group", xlabel="step", yscale="log")  # heads' lr can be 20x the encoder's
    for task in dict.fromkeys(r["task"] for r in dev):
        steps = [r["step"] for r in dev if r["task"] == task]
        ax_dev.plot(steps, [r["accuracy"] for r in dev if r["task"] == task], marker="o", label=f"{task} accuracy")
        ax_dev.plot(steps, [r["macro_f1"] for r in dev if r["task"] == task], marker="x", linestyle="--",
                    label=f"{task} macro-F1")
    ax_dev.set(title="dev", xlabel="step")
    ax_dev.legend(fontsize=8)
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    return save(fig, out)


def plot_study(rows, out):
    """The study as one figure: what each row buys (test accuracy per task, left) against what it costs
    (trainable parameters, x), what it gives up (the encoder's STSb Spearman after training, middle), and the two
    against each other (right).
    rows: {name: {"trainable": int, "test": {task: {"accuracy": ...}}, "sts_spearman": float}}."""
    plt = pyplot()
    fig, (ax_acc, ax_sts, ax_trade) = plt.subplots(1, 3, figsize=(20, 5.5))
    tasks = list(dict.fromkeys(t for r in rows.values() for t, m in r["test"].items() if "accuracy" in m))
    for task, marker in zip(tasks, "os^Dv<>p*h"):
        pts = [(r["trainable"], r["test"][task]["accuracy"], name) for name, r in rows.items() if task in r["test"]]
        ax_acc.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=task)
        for x, y, name in pts:
            ax_acc.annotate(name, (x, y), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax_acc.set(title="test accuracy per task", xlabel="trainable parameters", xscale="symlog")  # 0 = zero-shot
    ax_acc.legend(fontsize=8)
    for name, r in rows.items():
        ax_sts.scatter(r["trainable"], r["sts_spearman"], color="tab:red")
        ax_sts.annotate(name, (r["trainable"], r["sts_spearman"]), fontsize=7, xytext=(4, 2),
                        textcoords="offset points")
    ax_sts.set(title="STSb test Spearman after training (82.03 before)", xlabel="trainable parameters",
               xscale="symlog")
    # the trade-off itself: what each row kept of general similarity against what it learned
    for task, marker in zip(tasks, "os^Dv<>p*h"):
        pts = [(r["sts_spearman"], r["test"][task]["accuracy"], name) for name, r in rows.items() if task in r["test"]]
        ax_trade.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=task)
        for x, y, name in pts:
            ax_trade.annotate(name, (x, y), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax_trade.set(title="test accuracy against STSb after (up and right is better)", xlabel="STSb test Spearman after")
    ax_trade.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out)
