"""Training curves as a picture: the loss and lr, and each task's dev accuracy and macro-F1, against steps.

    python -m minimt plot runs/train            # -> runs/train/curves.png (make train draws it too)

Read from the run's metrics.jsonl (train.py writes a "train" line every log_every steps and a "dev" line per task
at each evaluation). matplotlib is an optional extra, imported only here: pip install 'minimt[plot]'.
"""
import json
import os
from pathlib import Path


def plot_run(run_dir, out=None):
    """Write the run's curves as a PNG (default: <run_dir>/curves.png), atomically; returns its path."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only, no window: works on servers and in CI
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plotting needs matplotlib, an optional extra: pip install 'minimt[plot]' "
                           "(or pip install matplotlib)") from None
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; plot takes a training run's out_dir, e.g. runs/train")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [r for r in rows if r["split"] == "train"]
    dev = [r for r in rows if r["split"] == "dev" and "checkpoint" not in r]
    if not train and not dev:
        raise ValueError(f"{path} has no train or dev lines to plot")

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

    out = Path(out) if out else run_dir / "curves.png"
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, out)  # a reader never sees half a picture
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out
