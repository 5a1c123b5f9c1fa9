"""Pictures: a training run's curves, and the study's cost/benefit figure.

    python -m minimt plot runs/train            # -> runs/train/curves.png (make train draws it too)
    make study                                  # -> examples/study.png (plot_study), shown in the README

plot_run reads the run's metrics.jsonl (train.py writes a "train" line every log_every steps, with the learning
rate of each named parameter group, and a "dev" line per task at each evaluation). Each picture is built by a
function that returns the matplotlib Figure (run_figure, study_figure), so tests/test_plot.py can measure what was
drawn, and written by one that saves it (plot_run, plot_study). matplotlib is an optional extra, imported only
here: pip install 'minimt[plot]'.
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
    run_dir = Path(run_dir)
    out = out or run_dir / "curves.png"
    check_out(out)
    return save(run_figure(run_dir), out)


def read_curves(run_dir):
    """The run's train lines and dev lines from its metrics.jsonl, each checked for the fields the curves need."""
    path = Path(run_dir) / "metrics.jsonl"
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
    return train, dev


def run_figure(run_dir):
    """The run's curves as a matplotlib Figure: training loss, the learning rate of each parameter group, and each
    task's dev accuracy and macro-F1."""
    plt = pyplot()
    train, dev = read_curves(run_dir)
    fig, (ax_loss, ax_lr, ax_dev) = plt.subplots(1, 3, figsize=(15, 4.5))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue")
    ax_loss.set(title="training loss", xlabel="step")
    lines = lr_lines(train)
    for label, (steps, rates) in lines.items():
        ax_lr.plot(steps, rates, label=label)
    ax_lr.set(title="learning rate per parameter group", xlabel="step", yscale="log")  # heads' lr can be 20x
    if lines:
        ax_lr.legend(fontsize=7, ncols=1 if len(lines) <= 4 else 2)  # layer_decay: a line per layer
    for task in dict.fromkeys(r["task"] for r in dev):
        steps = [r["step"] for r in dev if r["task"] == task]
        ax_dev.plot(steps, [r["accuracy"] for r in dev if r["task"] == task], marker="o", label=f"{task} accuracy")
        ax_dev.plot(steps, [r["macro_f1"] for r in dev if r["task"] == task], marker="x", linestyle="--",
                    label=f"{task} macro-F1")
    ax_dev.set(title="dev", xlabel="step")
    if dev:
        ax_dev.legend(fontsize=8)
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    return fig


def lr_lines(train):
    """{legend label: (steps, rates)}, one line per schedule. Groups whose rates are equal at every step share a
    line named after all of them, so no line hides under another: a unit's decay and no_decay groups always do, and
    without layer_decay so do the embeddings and every layer. Under gradual unfreezing a group's line starts at the
    step its unit opened."""
    names = {}
    for name in dict.fromkeys(n for r in train for n in r["lr"]):
        points = tuple((r["step"], r["lr"][name]) for r in train if name in r["lr"])
        names.setdefault(points, []).append(name)
    return {group_label(group): tuple(zip(*points)) for points, group in names.items()}


def group_label(names):
    """Optimizer group names (freeze.param_groups) as a reader says them: ['embeddings', 'layer.0',
    'layer.0/no_decay', 'layer.1', 'head.mood'] -> 'embeddings, encoder layers 0-1, head mood'. A group with no
    name is logged by its number (train.lrs) and reads 'group 3'."""
    units = list(dict.fromkeys(n.removesuffix("/no_decay") for n in names))
    layers = sorted(int(u.split(".")[1]) for u in units if u.startswith("layer."))
    heads = [u.split(".", 1)[1] for u in units if u.startswith("head.")]
    parts = [f"group {u}" if u.isdigit() else u for u in units if not u.startswith(("layer.", "head."))]
    if layers:
        consecutive = len(layers) > 1 and layers == list(range(layers[0], layers[-1] + 1))
        numbers = f"{layers[0]}-{layers[-1]}" if consecutive else ", ".join(map(str, layers))
        parts.append(("encoder layer " if len(layers) == 1 else "encoder layers ") + numbers)
    if heads:
        parts.append(("head " if len(heads) == 1 else "heads ") + ", ".join(heads))
    return ", ".join(parts)


# How a study row trains, in the order the figure lists them, and each kind's colour. study_kind decides from the
# row's own numbers, so a new row needs no entry here.
KINDS = {"nothing trained": "tab:gray", "heads only": "tab:green", "part of the encoder": "tab:orange",
         "the whole encoder": "tab:red", "a task on the embedding": "tab:blue"}
BAND = "#ffeaa0"  # behind the rows the README and docs/study.md discuss


def plot_study(rows, out, highlight=()):
    """Write the study figure (study_figure) to `out`, atomically; returns its path."""
    check_out(out)
    return save(study_figure(rows, highlight), out)


def study_figure(rows, highlight=()):
    """The study as a table of dots: one line per row, one column per measure (trainable parameters, each task's
    test accuracy, the encoder's STSb Spearman after training), every dot with its value written beside it. Each
    row has a line of its own, so no label can land on another however close two rows' numbers are. Rows are
    grouped by how they train (KINDS: colour and order); the rows named in `highlight` (those the README and
    docs/study.md discuss) get a band and a bold name. A name in `highlight` that `rows` lacks is not drawn: a
    partial study has fewer rows.
    rows: {name: {"trainable": int, "trainable_start": int (optional: gradual unfreezing starts smaller),
                  "test": {task: {"accuracy": ...} or a pair task's metrics}, "sts_spearman": float}}."""
    plt = pyplot()
    check_study_rows(rows)
    most = max(r["trainable"] for r in rows.values())
    kind = {name: study_kind(r, most) for name, r in rows.items()}
    order = sorted(rows, key=lambda name: list(KINDS).index(kind[name]))  # stable: the study's order within a kind
    columns = study_columns(rows)
    fig, axes = plt.subplots(1, len(columns), sharey=True, layout="constrained",
                             width_ratios=[1.4] + [1] * (len(columns) - 1),  # room for '2,695 → 22.6M'
                             figsize=(2.8 + 2.8 * len(columns), 1.8 + 0.3 * len(order)))
    for ax, column in zip(axes, columns):
        draw_column(ax, column, [(name, rows[name], kind[name], name in highlight) for name in order])
    params_axis(axes[0], rows, order)  # a log axis in place of the linear one draw_column gave it
    if pretrained_sts(rows) is not None:  # what the other rows gave up, or gained
        axes[-1].axvline(pretrained_sts(rows), color="0.4", linestyle="--", linewidth=1, zorder=1)
    axes[0].set_yticks(range(len(order)), order, fontsize=9)
    for label, name in zip(axes[0].get_yticklabels(), order):
        label.set_fontweight("bold" if name in highlight else "normal")
    axes[0].set_ylim(len(order) - 0.5, -0.5)  # the first row at the top
    study_legend(fig)
    return fig


def draw_column(ax, column, lines):
    """One measure for every row: `lines` holds (name, row, kind, highlighted), top to bottom."""
    title, value, text = column
    values = [value(row) for _, row, _, _ in lines]
    for y, ((name, row, kind, highlighted), v) in enumerate(zip(lines, values)):
        if highlighted:
            ax.axhspan(y - 0.5, y + 0.5, color=BAND, zorder=0)
        if v is None:  # e.g. an accuracy for a row with no heads: the tables' dash
            ax.text(0.5, y, "—", transform=ax.get_yaxis_transform(), ha="center", va="center", color="0.6")
        else:
            dot(ax, v, y, text(row), KINDS[kind], highlighted)
        if y and kind != lines[y - 1][2]:
            ax.axhline(y - 0.5, color="0.75", linewidth=0.8)  # a rule between two kinds of training
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    present = [v for v in values if v is not None]
    ax.set_xlim(padded_limits(present))
    ax.set_xticks([t for t in ax.get_xticks() if t <= max(present)])  # right of the data: room for text only


def check_study_rows(rows):
    """Each row holds what the figure draws, or a UserError naming the row and the field."""
    if not rows:
        raise UserError("the study figure needs at least one row")
    for name, r in rows.items():
        needs = {"trainable": (int, "a whole number"), "test": (dict, "a mapping of task to metrics"),
                 "sts_spearman": ((int, float), "a number")}
        for field, (kinds, what) in needs.items():
            if not isinstance(r.get(field), kinds) or isinstance(r.get(field), bool):
                raise UserError(f"study row {name}: {field} is {r.get(field)!r}; the figure needs {what} there")


def study_kind(row, most):
    """How a row trains, from its own numbers (`most`: the largest trainable count of the study): nothing; a task
    scored on the embedding itself (a pair task reports a Spearman or a recall, never an accuracy); or heads only
    (under 1% of the parameters), part of the encoder, the whole encoder."""
    if row["trainable"] == 0:
        return "nothing trained"
    if any("accuracy" not in metrics for metrics in row["test"].values()):
        return "a task on the embedding"
    share = row["trainable"] / most
    return "heads only" if share < 0.01 else "part of the encoder" if share < 0.5 else "the whole encoder"


def pretrained_sts(rows):
    """The STSb Spearman of the encoder as it comes (every row that trained nothing has it), or None without such
    a row."""
    scores = {name: r["sts_spearman"] for name, r in rows.items() if r["trainable"] == 0}
    if scores and max(scores.values()) - min(scores.values()) > 0.01:
        raise UserError(f"study rows {', '.join(scores)} trained nothing, yet their STSb Spearman differs: "
                        f"{', '.join(f'{s:.2f}' for s in scores.values())}; they measure the same encoder")
    return next(iter(scores.values()), None)


def study_columns(rows):
    """(title, the value a row puts in the column or None, the text beside its dot) for each column."""
    tasks = dict.fromkeys(t for r in rows.values() for t, m in r["test"].items() if "accuracy" in m)
    before = "" if pretrained_sts(rows) is None else f"\n(dashed: before training, {pretrained_sts(rows):.2f})"
    return ([("trainable parameters", lambda r: r["trainable"], params_text)]
            + [accuracy_column(task) for task in tasks]
            + [(f"STSb test Spearman after training{before}", lambda r: r["sts_spearman"],
                lambda r: f"{r['sts_spearman']:.2f}")])


def accuracy_column(task):
    def value(row):
        return row["test"].get(task, {}).get("accuracy")  # None: the row has no head for this task
    return f"{task}: test accuracy", value, lambda row: f"{value(row):.3f}"


def params_text(row):
    """22568071 -> '22.6M'; a row that unfroze as it went shows where it started: '2,695 -> 22.6M'."""
    def short(n):
        return f"{n:,}" if n < 1_000_000 else f"{n / 1e6:.1f}M"
    start = row.get("trainable_start", row["trainable"])
    return short(row["trainable"]) if start == row["trainable"] else f"{short(start)} → {short(row['trainable'])}"


def dot(ax, x, y, text, colour, highlighted):
    ax.scatter(x, y, s=60 if highlighted else 30, color=colour, alpha=1 if highlighted else 0.6, zorder=3)
    ax.annotate(text, (x, y), xytext=(7, 0), textcoords="offset points", va="center", fontsize=8,
                color="black" if highlighted else "0.35", fontweight="bold" if highlighted else "normal")


def padded_limits(values):
    """x limits around `values`, with room on the right for the text beside the rightmost dot."""
    lo, hi = min(values), max(values)
    span = (hi - lo) or abs(hi) or 1.0
    return lo - 0.08 * span, hi + 0.35 * span


def params_axis(ax, rows, order):
    """Trainable parameters span 0 to 2e7: a log axis (symlog, so 0 has a place), with a line from where a
    gradually unfrozen row started to where it ended."""
    ax.set_xscale("symlog", linthresh=1)
    for y, name in enumerate(order):
        start = rows[name].get("trainable_start", rows[name]["trainable"])
        if start != rows[name]["trainable"]:
            ax.plot([start, rows[name]["trainable"]], [y, y], color="0.6", linewidth=1, zorder=2)
            ax.scatter(start, y, s=20, facecolor="white", edgecolor="0.4", zorder=3)
    ax.set_xlim(-1, 1e11)  # room right of 2e7 for '2,695 → 22.6M'
    ax.set_xticks([0, 1e2, 1e4, 1e6, 1e8], ["0", "100", "10k", "1M", "100M"])
    ax.minorticks_off()


def study_legend(fig):
    """One legend for the figure: the colour of each kind of training, and the band."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    handles = [Line2D([], [], marker="o", linestyle="", color=colour, label=kind) for kind, colour in KINDS.items()]
    handles.append(Patch(color=BAND, label="discussed in the README and docs/study.md"))
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=9, frameon=False)
