"""Checkpoints of a MultiTaskModel: a directory anyone can read without minimt's training code.

    <dir>/model.safetensors   every tensor, minimt names (bert.layers.0.attn.qkv.weight, heads.topic.out.bias)
    <dir>/checkpoint.json     model config, tasks and their label lists, head kind, training config, step, metrics,
                              versions, and the sha256 of the label lists, of the model settings (config, head
                              kind, dropout) and of each file beside it
    <dir>/tokenizer.json      the tokenizer, so the directory is self-contained
    <dir>/train_state.pt      (the "last" checkpoint only) optimizer state and RNG, for --resume

Written atomically: everything goes into a fresh temporary directory which is then renamed into place, so a run
killed at any instant (kill -9) leaves either the previous checkpoint or the new one, never half of each.
recover() clears what such a kill leaves beside the checkpoint (.<name>.tmp-<pid>, .<name>.old-<pid>).

Checked when read: checkpoint.json records the sha256 of each file save() wrote, of the label lists and of the model
settings; a changed or damaged file, a cut-off file, an edited label list or model setting, a head whose output
count is not its label count, or a NaN/inf weight is a UserError naming the file.
"""
import hashlib
import json
import pickle
import platform
import re
from dataclasses import asdict
from pathlib import Path

import numpy
import safetensors
import tokenizers
import torch
from safetensors.torch import save_file

from minimt.config import BertConfig, read_json
from minimt.errors import UserError
from minimt.io import files
from minimt.io.files import check_sha256, fresh_dir, publish, sha256_of, write_json
from minimt.model import BertModel
from minimt.tokenizer import Tokenizer
from minimt.weights import read_tensors

FIX = "restore the checkpoint from a copy or train it again"
REDO = "restore it from a copy or write the directory again (train or export)"  # for checkpoints and exports alike


def versions():
    return {"python": platform.python_version(), "torch": torch.__version__, "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__, "numpy": numpy.__version__}


def save(path, model, meta, train_state=None):
    """Write model + meta (+ train_state) to `path`, replacing what was there in one rename."""
    path = Path(path)
    tmp = fresh_dir(path)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp / "model.safetensors")
    model.tokenizer.tok.save(str(tmp / "tokenizer.json"))
    names = ["model.safetensors", "tokenizer.json"]
    if train_state is not None:
        torch.save(train_state, tmp / "train_state.pt")
        names.append("train_state.pt")
    settings = {"model": asdict(model.config), "head": model.head_kind, "dropout": model.dropout}
    # recorded last, so nothing in `meta` can overwrite them: what the loaders check the files, settings and labels
    # against
    meta = {**settings, "tasks": model.tasks, "versions": versions(), **meta,
            "labels_sha256": labels_sha256(model.tasks), "model_sha256": json_sha256(settings),
            "sha256": {f: sha256_of(tmp / f) for f in names}}
    write_json(tmp / "checkpoint.json", meta)
    return publish(tmp, path)


def json_sha256(obj):
    """sha256 of a JSON value, keys sorted: the same settings give the same hash whatever their order in the file."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def labels_sha256(tasks):
    """sha256 of the label maps {task: [label, ...]}: reordering, renaming, adding or removing a label changes it
    (the tasks are sorted by name, the labels keep their order: a label's position is its class index)."""
    return json_sha256(tasks)


def read_record(d):
    """checkpoint.json of the checkpoint directory `d`, its label lists and model settings checked (check_record)."""
    meta = read_json(d / "checkpoint.json", REDO)
    check_record(d, meta)
    return meta


def check_record(d, meta, outputs=None, tensors_file=None):
    """The label lists and the model settings (the config, head kind and dropout the model is built from) of
    checkpoint.json against the hashes save() recorded with them; with `outputs`, each head's output count too."""
    check_heads(meta["tasks"], outputs, meta["labels_sha256"], d / "checkpoint.json", tensors_file)
    settings = {k: meta.get(k) for k in ("model", "head", "dropout")}
    if json_sha256(settings) != meta.get("model_sha256"):
        raise UserError(f"{d / 'checkpoint.json'}: the model settings ('model', 'head', 'dropout') do not match the "
                        f"model_sha256 recorded with them: they were edited after saving; {REDO}")


def step(d):
    """The step of the intact checkpoint `d` (-1 if its checkpoint.json records none): how recover() and find()
    rank the copies an interrupted save left."""
    return intact(d).get("step", -1)


def intact(d):
    """checkpoint.json of the directory `d`, after checking that every file is there and matches its recorded
    sha256 and the label lists match theirs: enough to choose among leftover copies without loading them."""
    meta = read_record(d)
    for name in meta["sha256"]:
        checked_file(d, meta, name)
    return meta


def recover(path):
    """Clean up after saves of the checkpoint at `path` that were killed (files.recover); call it before training
    writes to `path` again."""
    return files.recover(path, step, "checkpoint", rank_name="step")


def find(path):
    """The checkpoint directory at `path`; after a kill between save's two renames, the newest intact previous one."""
    path = Path(path)
    if (path / "checkpoint.json").exists():
        return path
    best, n, rejected = files.newest_intact(files.leftovers(path, "old"), step)
    if best is not None:
        print(f"{path} is missing: a save was interrupted; using the previous checkpoint {best} (step {n})")
        return best
    damaged = "".join(f"; {d} is damaged: {why}" for d, why in rejected.items())
    raise FileNotFoundError(f"no checkpoint at {path} (expected {path / 'checkpoint.json'}){damaged}; "
                            f"train one with `python -m minimt train CONFIG.json`")


def read_meta(path):
    """checkpoint.json of the checkpoint at `path`, its label lists and model settings checked (read_record)."""
    return read_record(find(path))


def read(path):
    """(BertModel with the checkpoint's encoder tensors, its Tokenizer, every tensor by name, checkpoint.json),
    after every check; model.safetensors is read once. MultiTaskModel.from_checkpoint builds the heads from it."""
    path = find(path)
    meta, state = _checked(path)
    cfg = BertConfig(**meta["model"])
    bert = BertModel(cfg)
    bert.load_state_dict({k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}, strict=True)
    tokenizer = Tokenizer(checked_file(path, meta, "tokenizer.json"), cfg.max_seq_length, cfg.do_lower_case)
    return bert, tokenizer, state, meta


def _checked(d):
    """(checkpoint.json, every tensor of model.safetensors) of the checkpoint directory `d`, after every check."""
    meta = read_json(d / "checkpoint.json", REDO)
    f = checked_file(d, meta, "model.safetensors")
    state = read_tensors(f, FIX)
    outputs = {k.split(".")[1]: len(v) for k, v in state.items() if re.fullmatch(r"heads\.\w+\.out\.weight", k)}
    check_record(d, meta, outputs, f)
    return meta, state


def load_tensors(path):
    return _checked(find(path))[1]


def load_train_state(path):
    d = find(path)
    f = checked_file(d, read_record(d), "train_state.pt")
    try:
        # weights_only: plain tensors and containers, never arbitrary pickled objects
        return torch.load(f, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:  # what a cut-off or damaged file raises
        raise UserError(f"{f} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): "
                        f"it was cut off or damaged; {FIX}, or start the run again without --resume") from None


def checked_file(d, meta, name, record="checkpoint.json"):
    """d/name, its sha256 checked against the one `meta` (read from d/record) records for it."""
    if name not in meta.get("sha256", {}):
        raise UserError(f"{d / record} records no sha256 for {name}; {REDO}")
    return check_sha256(d / name, meta["sha256"][name], d / record, REDO)


def check_heads(tasks, outputs, want, labels_file, tensors_file):
    """The label lists {task: [label, ...]} of `labels_file` (checkpoint.json, heads.json): with `outputs`
    {task: the head's output count} from `tensors_file`, one output per label and one head per task; with `want`
    (the labels_sha256 recorded when saved), the same lists in the same order. An edited list would otherwise name
    the wrong classes without a sound."""
    if outputs is not None:
        for task in sorted(set(tasks) | set(outputs)):
            if task not in outputs:
                raise UserError(f"{labels_file}: task {task!r} has no head in {tensors_file}; {REDO}")
            if task not in tasks:
                raise UserError(f"{tensors_file}: head {task!r} has no label list under 'tasks' in {labels_file}; "
                                f"{REDO}")
            if outputs[task] != len(tasks[task]):
                raise UserError(f"{labels_file}: head {task!r} has {outputs[task]} outputs in {tensors_file.name} "
                                f"but {len(tasks[task])} labels here: the label list was edited; {REDO}")
    if want is not None and labels_sha256(tasks) != want:
        raise UserError(f"{labels_file}: the label lists under 'tasks' do not match the labels_sha256 recorded with "
                        f"them: they were edited (reordered, renamed) after saving; {REDO}")
