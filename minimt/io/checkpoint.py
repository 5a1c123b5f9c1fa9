"""Checkpoints of a MultiTaskModel: a directory anyone can read without minimt's training code.

    <dir>/model.safetensors   every tensor, minimt names (bert.layers.0.attn.qkv.weight, heads.topic.out.bias)
    <dir>/checkpoint.json     model config, tasks and their label lists, head kind, training config, step, metrics,
                              versions, and the sha256 of the label lists and of each file beside it
    <dir>/tokenizer.json      the tokenizer, so the directory is self-contained
    <dir>/train_state.pt      (the "last" checkpoint only) optimizer state and RNG, for --resume

Written atomically: everything goes into a fresh temporary directory which is then renamed into place, so a run
killed at any instant (kill -9) leaves either the previous checkpoint or the new one, never half of each.
recover() clears what such a kill leaves beside the checkpoint (.<name>.tmp-<pid>, .<name>.old-<pid>).

Checked when read: checkpoint.json records the sha256 of each file save() wrote and of the label lists; a changed or
damaged file, a cut-off file, an edited label list, a head whose output count is not its label count, or a NaN/inf
weight is a UserError naming the file.
"""
import hashlib
import json
import os
import pickle
import platform
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy
import safetensors
import tokenizers
import torch
from safetensors.torch import save_file

from minimt.config import BertConfig, read_json
from minimt.errors import UserError
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
    files = ["model.safetensors", "tokenizer.json"]
    if train_state is not None:
        torch.save(train_state, tmp / "train_state.pt")
        files.append("train_state.pt")
    # recorded last, so nothing in `meta` can overwrite them: what the loaders check the files and labels against
    meta = {"model": asdict(model.config), "tasks": model.tasks, "head": model.head_kind,
            "dropout": model.dropout, "versions": versions(), **meta,
            "labels_sha256": labels_sha256(model.tasks), "sha256": {f: sha256_of(tmp / f) for f in files}}
    write_json(tmp / "checkpoint.json", meta)
    return publish(tmp, path)


def labels_sha256(tasks):
    """sha256 of the label maps {task: [label, ...]}: reordering, renaming, adding or removing a label changes it
    (the tasks are sorted by name, the labels keep their order: a label's position is its class index)."""
    text = json.dumps(tasks, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def leftovers(path, kind):
    """The .<name>.tmp-<pid> (kind "tmp") or .<name>.old-<pid> (kind "old") directories beside `path`, nothing else."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{kind}-\d+")
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir())


def newest_intact(olds):
    """(the directory among `olds` with the highest step in its checkpoint.json that passes intact() or None, that
    step, {directory: why it was passed over}). A checkpoint.json without a step ranks lowest."""
    steps, rejected = {}, {}
    for d in olds:
        try:
            steps[d] = intact(d).get("step", -1)
        except (ValueError, FileNotFoundError, KeyError) as e:  # KeyError: a checkpoint.json without "tasks"
            rejected[d] = f"{type(e).__name__}: {e}"
    if not steps:
        return None, None, rejected
    best = max(steps, key=lambda d: (steps[d], d.name))
    return best, steps[best], rejected


def intact(d):
    """checkpoint.json of the directory `d`, after checking that every file is there and matches its recorded
    sha256 and the label lists match theirs: enough to choose among leftover copies without loading them."""
    meta = read_json(d / "checkpoint.json", REDO)
    for name in meta["sha256"]:
        checked_file(d, meta, name)
    check_heads(meta["tasks"], None, meta["labels_sha256"], d / "checkpoint.json", None)
    return meta


def recover(path):
    """Clean up after saves of the checkpoint at `path` that were killed; returns one message per action, to log.
    Call it before training writes to `path` again, from one process only: it deletes the temporary directories
    of any save in progress.
      .<name>.tmp-<pid>   a save that never finished: removed
      .<name>.old-<pid>   the previous checkpoint, kept by publish() until the new one is in place: removed if
                          `path` exists; otherwise the newest intact one (by step) goes back to `path`, the rest
                          are removed (if none is intact, all are kept, for a person to look at)."""
    path = Path(path)
    done = []
    for tmp in leftovers(path, "tmp"):
        shutil.rmtree(tmp)
        done.append(f"removed {tmp}: a save of {path} that never finished")
    olds = leftovers(path, "old")
    if olds and not path.exists():
        best, step, rejected = newest_intact(olds)
        if best is None:
            return done + [f"{path} is missing and no copy left by an interrupted save is intact; kept them for you "
                           f"to inspect or delete: " + "; ".join(f"{d}: {why}" for d, why in rejected.items())]
        os.rename(best, path)
        olds.remove(best)
        done.append(f"{path} was missing (a save was interrupted): put back the previous checkpoint {best.name} "
                    f"(step {step})")
    for old in olds:
        shutil.rmtree(old)
        done.append(f"removed {old}: a previous checkpoint of {path} left by an interrupted save")
    return done


def find(path):
    """The checkpoint directory at `path`; after a kill between save's two renames, the newest intact previous one."""
    path = Path(path)
    if (path / "checkpoint.json").exists():
        return path
    olds = leftovers(path, "old")
    best, step, rejected = newest_intact(olds)
    if best is not None:
        print(f"{path} is missing: a save was interrupted; using the previous checkpoint {best} (step {step})")
        return best
    damaged = "".join(f"; {d} is damaged: {why}" for d, why in rejected.items())
    raise FileNotFoundError(f"no checkpoint at {path} (expected {path / 'checkpoint.json'}){damaged}; "
                            f"train one with `python -m minimt train CONFIG.json`")


def read_meta(path):
    """checkpoint.json of the checkpoint at `path`, its label lists checked against the hash save() recorded."""
    d = find(path)
    meta = read_json(d / "checkpoint.json", REDO)
    check_heads(meta["tasks"], None, meta["labels_sha256"], d / "checkpoint.json", None)
    return meta


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
    check_heads(meta["tasks"], outputs, meta["labels_sha256"], d / "checkpoint.json", f)
    return meta, state


def load_tensors(path):
    return _checked(find(path))[1]


def load_train_state(path):
    d = find(path)
    f = checked_file(d, read_json(d / "checkpoint.json", REDO), "train_state.pt")
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
