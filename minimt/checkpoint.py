"""Checkpoints of a MultiTaskModel: a directory anyone can read without minimt's training code.

    <dir>/model.safetensors   every tensor, minimt names (bert.layers.0.attn.query.weight, heads.topic.out.bias)
    <dir>/checkpoint.json     model config, tasks and their label lists, head kind, training config, step, metrics, versions
    <dir>/tokenizer.json      the tokenizer, so the directory is self-contained
    <dir>/train_state.pt      (the "last" checkpoint only) optimizer state and RNG, for --resume

Written atomically: everything goes into a fresh temporary directory which is then renamed into place, so a run
killed at any instant (kill -9) leaves either the previous checkpoint or the new one, never half of each.
"""
import json
import os
import platform
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from minimt.config import BertConfig
from minimt.encoder import SentenceEncoder
from minimt.model import BertModel
from minimt.tokenizer import Tokenizer


def versions():
    import numpy, safetensors, tokenizers
    return {"python": platform.python_version(), "torch": torch.__version__, "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__, "numpy": numpy.__version__}


def save(path, model, meta, train_state=None):
    """Write model + meta (+ train_state) to `path`, replacing what was there in one rename."""
    path = Path(path)
    tmp = fresh_dir(path)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp / "model.safetensors")
    meta = {"model": asdict(model.config), "tasks": model.tasks, "head": model.head_kind,
            "dropout": model.dropout, "versions": versions(), **meta}
    (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    model.tokenizer.tok.save(str(tmp / "tokenizer.json"))
    if train_state is not None:
        torch.save(train_state, tmp / "train_state.pt")
    return publish(tmp, path)


def fresh_dir(path):
    """An empty temporary directory beside `path`, to fill and then publish()."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def publish(tmp, path):
    """Put the finished directory `tmp` at `path`, replacing what was there: a reader sees the old directory or
    the new one, never a mix (checkpoints and exports alike)."""
    for f in tmp.rglob("*"):  # the data must be on disk before the rename makes it visible
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.rename(path, old)  # two renames: a directory cannot replace a non-empty one in one step
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def find(path):
    """The checkpoint directory at `path`; after a kill between save's two renames, the intact previous one."""
    path = Path(path)
    if (path / "checkpoint.json").exists():
        return path
    olds = sorted(path.parent.glob(f".{path.name}.old-*"))
    if olds and (olds[-1] / "checkpoint.json").exists():
        print(f"{path} is missing: a save was interrupted; using the previous checkpoint {olds[-1]}")
        return olds[-1]
    raise FileNotFoundError(f"no checkpoint at {path} (expected {path / 'checkpoint.json'}); "
                            f"train one with `python -m minimt train CONFIG.json`")


def read_meta(path):
    return json.loads((find(path) / "checkpoint.json").read_text(encoding="utf-8"))


def load_encoder(path):
    """The fine-tuned encoder alone: (BertModel, Tokenizer), every encoder tensor checked (strict); the heads are
    left out. This is what SentenceEncoder.from_pretrained("runs/train/best") loads."""
    bert, tokenizer, _, _ = _read(path)
    return bert, tokenizer


def load_model(path):
    """MultiTaskModel from a checkpoint directory, every tensor checked by load_state_dict(strict=True)."""
    from minimt.multitask import MultiTaskModel
    bert, tokenizer, state, meta = _read(path)
    model = MultiTaskModel(SentenceEncoder(bert, tokenizer), meta["tasks"], head=meta["head"], dropout=meta["dropout"])
    model.load_state_dict(state, strict=True)
    return model.eval()


def _read(path):
    """(BertModel with the checkpoint's encoder tensors, Tokenizer, every tensor by name, checkpoint.json),
    model.safetensors read once."""
    path = find(path)
    meta = read_meta(path)
    cfg = BertConfig(**meta["model"])
    state = load_file(path / "model.safetensors")
    bert = BertModel(cfg)
    bert.load_state_dict({k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}, strict=True)
    return bert, Tokenizer(path / "tokenizer.json", cfg.max_seq_length, cfg.do_lower_case), state, meta


def load_tensors(path):
    return load_file(find(path) / "model.safetensors")


def load_train_state(path):
    # weights_only: plain tensors and containers, never arbitrary pickled objects
    return torch.load(find(path) / "train_state.pt", weights_only=True)


def init_from(model, path):
    """Copy a trained checkpoint's encoder, and each head whose task has the same labels, into `model`."""
    src = load_model(path)
    same = [t for t in model.tasks if src.tasks.get(t) == model.tasks[t]]
    state = {k: v for k, v in src.state_dict().items()
             if k.startswith("bert.") or k.split(".")[1] in same}
    missing, _ = model.load_state_dict(state, strict=False)
    assert all(k.startswith("heads.") for k in missing), missing
    return f"initialised from {path}: encoder and heads {same or 'none'}"
