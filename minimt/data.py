"""Labelled text for multi-task training: files -> Examples -> splits -> batches.

    read_source         Source (file or glob, text column, a column per task) -> [Example(id="books.tsv:17", ...)]
    load_splits         {"train", "dev", "test"}: seeded, stratified by labels, duplicate texts never split apart
    label_maps          {"topic": ["airline", "books", ...], ...} from train only; check_labels guards dev and test
    plan_epoch          [(task, [indices]), ...]: joint | round_robin | proportional task mixing
    collate             {"ids": token-id lists, "labels": {task: (B,) LongTensor, IGNORE where a row has no label}}
    encode_labels       the labels alone, for heads trained on cached embeddings

A text may carry labels for several tasks (a multi-domain review has a domain and a sentiment) or for only some
(a sentiment-only file mixed with a topic-only one). A missing label is None here and IGNORE (-100) in a batch, the
ignore_index of F.cross_entropy, so a head learns only from rows that have its label. The mixing modes follow
MT-DNN (Liu et al. 2019: one task per batch) and the temperature sampling of multilingual BERT and T5, where a
task is drawn with probability proportional to n_t ** (1/T).
"""
import csv
import glob
import json
import math
import random
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from minimt.errors import UserError
from minimt.io import datasets
from minimt.io.download import home
from minimt.multitask import check_task_name
from minimt.objectives import KINDS, LOSSES

IGNORE = -100  # F.cross_entropy's default ignore_index
SPLITS = ("train", "dev", "test")
MODES = ("joint", "round_robin", "proportional")
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


@dataclass
class Pair:
    """The second half of a pairs or contrastive row (minimt/objectives.py): the row's text is the first."""
    task: str
    text_b: str            # pairs: the other sentence; contrastive: the positive
    score: float = None    # pairs: the similarity score
    negatives: tuple = ()  # contrastive: hard negatives


@dataclass
class Example:
    id: str        # "<file name>:<row>", row = 1-based record number after the header: stable across runs
    text: str
    labels: dict   # task -> label name (str), or None when this row has no label for that task
    pair: Pair = None  # a pairs or contrastive row (then labels is empty)

    def texts(self):
        """Every text the row needs encoded: its own, then text_b and hard negatives for a pair task."""
        return [self.text] if self.pair is None else [self.text, self.pair.text_b, *self.pair.negatives]


def of_type(value, want):
    """Whether a setting read from JSON has the field's type: a bool is no int (JSON true is not 1), an int is a
    float (JSON 5 for 5.0). Used for Source and TrainConfig fields alike."""
    if want is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, want) and not (want is int and isinstance(value, bool))


def has_task(ex, task):
    return ex.labels.get(task) is not None or (ex.pair is not None and ex.pair.task == task)


@dataclass
class Source:
    """One dataset file (or glob of files) and how its columns map to tasks."""
    path: str                    # file or glob; a relative path is read from the data dir
    text: str                    # the column (header name, or JSONL key) holding the text
    labels: dict                 # task -> column, or "$file": the file's stem ("books.tsv" -> "books")
    label_names: dict = field(default_factory=dict)  # task -> {raw value: label name}; raw values may share a name
    format: str = ""             # "csv" | "tsv" | "jsonl"; "" = from the extension
    columns: list = None         # the column names of a headerless CSV/TSV
    split: str = ""              # "train" | "dev" | "test" when the file already is that split; "" = split by seed
    limit: int = 0               # > 0: a seeded random subset of this many rows, for quick runs
    skip_empty_text: bool = False  # True: leave out rows with an empty text cell (otherwise they are an error)
    quoting: bool = True         # CSV/TSV: '"' quotes fields (multi-domain reviews); False: quotes are text (AG News)
    trailing_fields: bool = False  # headerless CSV/TSV: rows may carry fields past `columns` (STSb's), ignored
    # a task on the embedding itself instead of labels (minimt/objectives.py): kind "pairs" or "contrastive"
    kind: str = "classify"       # "classify" (labels -> heads) | "pairs" | "contrastive"
    task: str = ""               # pairs / contrastive: the task's name
    text_b: str = ""             # pairs: the second text's column; contrastive: the positive's column
    score: str = ""              # pairs: the score's column; contrastive: optional, to keep rows >= min_score
    min_score: float = None      # contrastive: only rows whose score is at least this are positives
    negatives: list = None       # contrastive: hard negatives' columns
    loss: str = ""               # pairs: "cosent" (default) | "mse"; contrastive: "in_batch" (default)
    scale: float = 20.0          # cosine * scale = logits (CoSENT, in-batch negatives): 1 / temperature
    score_scale: float = 1.0     # pairs with loss "mse": the target cosine is score / score_scale (STSb: 5)

    def __post_init__(self):
        for f in fields(self):  # a "5" for limit or a string for labels must fail here, naming the field
            v, want = getattr(self, f.name), f.type
            if not ((v is None and f.default is None) or of_type(v, want)):
                raise UserError(f"Source {self.path}: {f.name}={v!r} must be a {want.__name__}")
        if self.kind not in KINDS:
            raise UserError(f"Source {self.path}: kind {self.kind!r}; use one of {list(KINDS)}")
        if self.kind == "classify":
            if self.task or self.text_b or self.score or self.negatives or self.loss:
                raise UserError(f"Source {self.path}: task, text_b, score, negatives and loss belong to kind "
                                f"'pairs' or 'contrastive'; a classify source names its tasks in labels")
        else:
            need = {"task": self.task, "text_b": self.text_b} | ({"score": self.score} if self.kind == "pairs" else {})
            missing = [k for k, v in need.items() if not v]
            if missing or self.labels:
                raise UserError(f"Source {self.path}: kind {self.kind!r} needs {list(need)} (missing {missing}) "
                                f"and no labels (a pair task has no head)")
            check_task_name(self.task, f"Source {self.path}")
            self.loss = self.loss or LOSSES[self.kind][0]
            if self.loss not in LOSSES[self.kind]:
                raise UserError(f"Source {self.path}: loss {self.loss!r} is not one of {list(LOSSES[self.kind])} "
                                f"for kind {self.kind!r}")
            if not self.scale > 0 or not self.score_scale > 0:
                raise UserError(f"Source {self.path}: scale and score_scale must be > 0")
            if self.min_score is not None and (self.kind != "contrastive" or not self.score):
                raise UserError(f"Source {self.path}: min_score filters a contrastive source by its score column")
        self.negatives = list(self.negatives or [])
        if self.format not in ("", "csv", "tsv", "jsonl"):
            raise UserError(f"Source {self.path}: format {self.format!r}; use 'csv', 'tsv', 'jsonl' or '' (extension)")
        if self.split not in ("",) + SPLITS or self.limit < 0:
            raise UserError(f"Source {self.path}: split {self.split!r} must be one of {('',) + SPLITS} and limit "
                            f"{self.limit} must be >= 0")
        if set(self.label_names) - set(self.labels):
            raise UserError(f"Source {self.path}: label_names names tasks that labels does not: {self.labels}")
        # the file gives strings; keys written as numbers ({1: "World"}) must still match the cell "1"
        self.label_names = {task: {str(raw): str(name) for raw, name in names.items()}
                            for task, names in self.label_names.items()}


def _records(path, fmt, columns, quoting=True, trailing=False):
    """One file -> (its column names, [{column: value}, ...]), a dict per record."""
    if fmt == "jsonl":
        if columns:
            raise UserError(f"{path}: columns= is for a headerless CSV/TSV; each JSONL row names its own keys")
        rows = [row for _, row in read_jsonl(path)]
        return sorted({key for row in rows for key in row}), rows
    # newline="": quoted fields keep their own line breaks; -sig: a byte-order mark is not part of a column name
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t" if fmt == "tsv" else ",",
                            quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
        header = list(columns) if columns else next(reader, [])
        rows = []
        for cells in reader:
            if not cells:
                continue  # a blank line is not a record (csv.DictReader skips them too)
            if trailing and columns and len(cells) > len(header):
                cells = cells[:len(header)]  # the Source says extra trailing fields are expected
            if len(cells) != len(header):
                raise UserError(f"{path}: row {len(rows) + 1} has {len(cells)} fields but there are {len(header)} "
                                f"columns {header}; is the format ({fmt}) or the quoting wrong?")
            rows.append(dict(zip(header, cells)))
    return header, rows


def read_jsonl(path):
    """[(line number, JSON object)] of a JSONL file; blank lines skipped, a byte-order mark allowed (as in CSV),
    and every error names the file and the line."""
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue  # a blank line is not a record
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno}); each line must "
                                    f"be one JSON object") from None
                if not isinstance(row, dict):
                    raise UserError(f"{path}:{n}: a JSON {type(row).__name__}, not an object; each line must be "
                                    f"one JSON object")
                check_unicode(row, f"{path}:{n}")
                rows.append((n, row))
        except UnicodeDecodeError:
            raise not_utf8(path) from None
    return rows


def check_unicode(row, where):
    """JSON's \\ud800-style escapes can spell a lone surrogate, which is no character and which no tokenizer takes:
    refuse it here, naming the line, before anything is trained or written."""
    for key, v in row.items():
        if isinstance(v, str) and not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:
                raise UserError(f"{where}: field {key!r} holds a lone surrogate ({v[e.start]!r} at position "
                                f"{e.start}), which is not text; fix the line's \\u escapes") from None


def not_utf8(path):
    """The error for a text file that is not UTF-8, naming its first bad line (raise it `from None`)."""
    return UserError(f"{path}:{bad_utf8_line(path)}: not UTF-8 text; convert the file to UTF-8 "
                     f"(e.g. iconv -f latin1 -t utf-8)")


def bad_utf8_line(path):
    """The number of the first line that is not UTF-8 (decoding errors give a byte offset in a buffer, not a line)."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return n
    return "?"


def _score(row, column, path, row_no):
    try:
        score = float(row.get(column))
    except (TypeError, ValueError):
        score = float("nan")
    if score != score or score in (float("inf"), float("-inf")):
        raise UserError(f"{path}: row {row_no} column {column!r} holds {row.get(column)!r}, not a number; a pair's "
                        f"score must be a finite number")
    return score


def _label(source, task, column, row, path, row_no):
    raw = path.stem if column == "$file" else row.get(column)
    if raw is None or raw == "":
        return None  # an empty cell, a JSON null or an absent key: this row has no label for the task
    raw = str(raw)   # JSON numbers and booleans are looked up like the same text in a CSV cell
    names = source.label_names.get(task)
    if names is None:
        return raw
    if raw not in names:
        raise UserError(f"{path}: row {row_no} column {column!r} holds {raw!r}, which label_names[{task!r}] does "
                        f"not map; it maps {sorted(names)}. Add it to label_names or fix the row")
    return names[raw]


def read_source(source, data_dir=None, seed=0):
    """Every row of a Source's file(s) as an Example, in file order (files of a glob sorted by path).
    data_dir: where a relative source.path is read from (default: data/, see minimt/io/datasets.py)."""
    data_dir = Path(home("data") if data_dir is None else data_dir)
    pattern = data_dir / source.path  # an absolute source.path replaces data_dir here
    files = sorted(Path(p) for p in glob.glob(str(pattern)) if Path(p).is_file())
    if not files:
        dataset = Path(source.path).parts[0]  # "multi_domain_sentiment/*.tsv" -> a dataset minimt can fetch
        hint = (datasets.how_to_fetch(dataset) if dataset in datasets.DATASETS
                else "set MINIMT_DATA or pass data_dir to read from elsewhere")
        raise FileNotFoundError(f"{source.path}: no file matches {pattern} (data dir {data_dir}); {hint}")
    examples = []
    for path in files:
        fmt = source.format or FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise UserError(f"{path}: cannot tell the format from the extension {path.suffix!r}; set format='csv', "
                            f"'tsv' or 'jsonl' on its Source")
        try:
            columns, rows = _records(path, fmt, source.columns, source.quoting, source.trailing_fields)
        except UnicodeDecodeError:  # it names a byte offset in a buffer, not the file or line
            raise not_utf8(path) from None
        except csv.Error as e:
            raise UserError(f"{path}: cannot read it as {fmt}: {e}") from None
        if not rows:
            raise UserError(f"{path}: the file has no rows (a CSV/TSV header alone is no rows)")
        text_columns = [source.text] + ([source.text_b] + source.negatives if source.text_b else [])
        for column in text_columns + [c for c in source.labels.values() if c != "$file"] + [source.score] * bool(
                source.score):
            if column not in columns:
                raise UserError(f"{path}: there is no column {column!r}; its columns are {columns}")
        for row_no, row in enumerate(rows, 1):
            texts = [row.get(c) for c in text_columns]
            empty = [c for c, t in zip(text_columns, texts) if not isinstance(t, str) or not t.strip()]
            if empty:  # empty, absent, or a JSON null or number
                if source.skip_empty_text:
                    continue
                raise UserError(f"{path}: row {row_no} has no text in column {empty[0]!r}; fix the file, or set "
                                f"skip_empty_text=True on its Source to leave such rows out")
            labels = {task: _label(source, task, column, row, path, row_no) for task, column in source.labels.items()}
            pair = None
            if source.kind != "classify":
                score = _score(row, source.score, path, row_no) if source.score else None
                if source.min_score is not None and score < source.min_score:
                    continue
                pair = Pair(source.task, texts[1], score, tuple(texts[2:]))
            examples.append(Example(f"{path.name}:{row_no}", texts[0], labels, pair))
    if 0 < source.limit < len(examples):
        rng = random.Random(f"limit:{seed}:{source.path}")  # a str seed gives the same numbers in every process
        examples = [examples[i] for i in sorted(rng.sample(range(len(examples)), source.limit))]
    return examples


def _split_by_seed(examples, seed, fractions):
    """Stratified by the tuple of labels; identical texts form one group, and a group goes to one split whole."""
    groups = {}  # text -> indices of the examples with this text
    for i, ex in enumerate(examples):
        groups.setdefault(ex.text, []).append(i)
    strata = {}  # the labels of a group's first example -> that stratum's groups
    for members in groups.values():
        key = tuple(sorted((task, label or "") for task, label in examples[members[0]].labels.items()))
        strata.setdefault(key, []).append(members)
    rng = random.Random(f"split:{seed}")
    train_end, dev_end = fractions[0], fractions[0] + fractions[1]
    chosen = {name: [] for name in SPLITS}
    for key in sorted(strata):
        stratum = strata[key]
        rng.shuffle(stratum)
        n, done = sum(len(members) for members in stratum), 0
        for members in stratum:
            # the group's middle, as a fraction of its stratum, decides: each split gets its share of every stratum
            middle = (done + len(members) / 2) / n
            name = "train" if middle < train_end else "dev" if middle < dev_end else "test"
            chosen[name].extend(members)
            done += len(members)
    return {name: [examples[i] for i in sorted(idx)] for name, idx in chosen.items()}


def load_splits(sources, data_dir=None, seed=0, fractions=(0.8, 0.1, 0.1)):
    """{"train", "dev", "test"}: a Source with split= goes there as is; the rest are pooled and split by seed."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise UserError(f"fractions {fractions} must be three numbers >= 0 (train, dev, test) that sum to 1")
    splits, pooled, origin = {name: [] for name in SPLITS}, [], {}
    for source in sources:
        examples = read_source(source, data_dir, seed)
        for ex in examples:
            if ex.id in origin:
                raise UserError(f"example {ex.id} comes from two sources ({origin[ex.id]} and {source.path}): two "
                                f"files with the same name, or one file listed twice")
            origin[ex.id] = source.path
        (splits[source.split] if source.split else pooled).extend(examples)
    # labelled rows and each pair task's rows are split on their own: adding a pair task to a config never moves
    # a labelled example to another split, so its scores stay comparable with the runs without it
    by_task = {}
    for ex in pooled:
        by_task.setdefault(None if ex.pair is None else ex.pair.task, []).append(ex)
    for group in by_task.values():
        for name, examples in _split_by_seed(group, seed, fractions).items():
            splits[name].extend(examples)
    if not splits["train"]:
        raise UserError(f"no training examples from {[s.path for s in sources]}; give a Source with split='train' "
                        f"or leave split='' so rows are split by seed")
    return splits


def label_maps(train, tasks):
    """task -> the label names seen in training, sorted: the order of each head's outputs."""
    maps = {}
    for task in tasks:
        names = sorted({ex.labels.get(task) for ex in train} - {None})
        if len(names) < 2:
            raise UserError(f"task {task!r} has {len(names)} label(s) in the training split {names}; a classifier "
                            f"needs at least 2. Check which column the Sources map to {task!r}")
        maps[task] = names
    return maps


def check_labels(examples, maps, split):
    """A dev/test label that training never saw has no output in its head: say which example, before evaluating."""
    known = {task: set(names) for task, names in maps.items()}
    for ex in examples:
        for task, label in ex.labels.items():
            if label is not None and task in known and label not in known[task]:
                raise UserError(f"{split} example {ex.id}: {task} label {label!r} never occurs in training; known "
                                f"labels: {maps[task]}. Drop such rows or change the split so training sees it")


def encode_labels(examples, maps):
    """{task: (B,) LongTensor of label indices, IGNORE where a row has no label for the task}."""
    check_labels(examples, maps, "batch")
    labels = {}
    for task, names in maps.items():
        index = {name: i for i, name in enumerate(names)}
        labels[task] = torch.tensor([IGNORE if ex.labels.get(task) is None else index[ex.labels[task]]
                                     for ex in examples], dtype=torch.long)
    return labels


def collate(examples, tokenizer, maps):
    """A batch: {"ids": one token-id list per text (unpadded: MultiTaskModel packs them),
    "labels": {task: (B,) label index, IGNORE for no label}}."""
    if not examples:
        raise UserError("collate needs at least one example")
    return {"ids": tokenizer.encode([ex.text for ex in examples]), "labels": encode_labels(examples, maps)}


class _Pool:
    """A task's example indices, walked in a shuffled order; used up, they are reshuffled and walked again."""

    def __init__(self, indices, rng):
        self.indices, self.rng, self.order, self.pos = list(indices), rng, [], 0

    def take(self, k):
        if self.pos >= len(self.order):
            self.order, self.pos = self.indices[:], 0
            self.rng.shuffle(self.order)
        batch = self.order[self.pos:self.pos + k]  # the last batch of a pass may be short: no example twice in it
        self.pos += k
        return batch


def check_mixing(mode):
    if mode not in MODES:
        raise UserError(f"task mixing mode {mode!r} is not known; use one of {MODES}")


def plan_epoch(train, tasks, batch_size, mode, seed, epoch, temperature=1.0):
    """The epoch's batches as [(task, [indices into train]), ...]; task None = every task (joint).

    A pure function of its arguments, so a resumed run recomputes the same plan and skips the batches done."""
    check_mixing(mode)
    if not train or not tasks or batch_size < 1 or temperature <= 0:
        raise UserError(f"plan_epoch needs training examples ({len(train)}), tasks ({list(tasks)}), batch_size >= 1 "
                        f"({batch_size}) and temperature > 0 ({temperature})")
    rng = random.Random(f"plan:{seed}:{epoch}")  # never the global RNG: the plan must not depend on what ran before
    if mode == "joint":  # one pool; each batch trains every head on the rows that have its label
        pool = _Pool(range(len(train)), rng)
        return [(None, pool.take(batch_size)) for _ in range(math.ceil(len(train) / batch_size))]
    pools = {}
    for task in tasks:
        pools[task] = _Pool([i for i, ex in enumerate(train) if has_task(ex, task)], rng)
        if not pools[task].indices:
            raise UserError(f"task {task!r}: no training example has a label for it")
    sizes = [len(pools[task].indices) for task in tasks]
    n_batches = sum(math.ceil(n / batch_size) for n in sizes)  # as many batches as one pass over every pool
    if mode == "round_robin":  # t1, t2, t1, t2, ...: every task the same number of batches, small pools wrap
        order = [tasks[b % len(tasks)] for b in range(n_batches)]
    else:  # proportional: n_t ** (1/T), taken relative to the largest pool so that a small T cannot overflow
        weights = [math.exp(math.log(n / max(sizes)) / temperature) for n in sizes]
        order = rng.choices(tasks, weights, k=n_batches)
    return [(task, pools[task].take(batch_size)) for task in order]
