"""Two processes under torchrun (gloo) train exactly as one process on the combined batches."""
import json
import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file

from minimt.train import TrainConfig, train


def test_two_processes_equal_one(tmp_path, data_file, tiny_checkpoint):
    # no dropout anywhere: two processes draw other random masks than one, everything else must match
    ckpt = tmp_path / "tiny"
    shutil.copytree(tiny_checkpoint, ckpt)
    hf = json.loads((ckpt / "config.json").read_text())
    hf.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (ckpt / "config.json").write_text(json.dumps(hf))
    settings = dict(sources=[{"path": str(data_file), "text": "text", "labels": {"topic": "topic", "mood": "mood"}}],
                    model=str(ckpt), epochs=2, batch_size=8, grad_accum=2, lr=1e-3, dropout=0.0, seed=5,
                    unfreeze_every=2, eval_every=4)
    train(TrainConfig(**settings, out_dir=str(tmp_path / "one")))

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**settings, "out_dir": str(tmp_path / "two")}))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "minimt", "train", str(cfg)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("data: train") == 1  # only rank 0 speaks

    one, two = load_file(tmp_path / "one" / "last" / "model.safetensors"), load_file(tmp_path / "two" / "last" / "model.safetensors")
    start = load_file(ckpt / "model.safetensors")
    assert not torch.equal(one["bert.layers.1.ffn.up.weight"], start["encoder.layer.1.intermediate.dense.weight"])
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    assert worst < 1e-6, f"2 processes vs 1: maxdiff {worst:.3g}"
