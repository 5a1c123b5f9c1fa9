"""The training loop on a tiny random model and a small synthetic dataset: logs, checkpoints, determinism,
--resume, the embedding cache and the CLI around them."""
import json
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from minimt.io import checkpoint
from minimt.multitask import EmbeddingCache, MultiTaskModel
from minimt.train import TrainConfig, init_from, load_config, lr_at, task_loss, train
from conftest import TOPICS

def config(tmp_path, data_file, tiny_checkpoint, **kw):
    base = dict(sources=[{"path": str(data_file), "text": "text", "labels": {"topic": "topic", "mood": "mood"}}],
                model=str(tiny_checkpoint), epochs=2, batch_size=8, lr=1e-3, eval_every=5, eval_batch_size=16,
                out_dir=str(tmp_path / "run"), seed=3)
    base.update(kw)
    return TrainConfig(**base)


def weights(run_dir, which="last"):
    return load_file(run_dir / which / "model.safetensors")


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs: maxdiff {(a[k] - b[k]).abs().max():.3g}"


def test_lr_at():
    assert [lr_at(s, 10, 0.2, "linear") for s in range(10)] == pytest.approx(
        [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    assert lr_at(2, 10, 0.2, "cosine") == pytest.approx(1.0) and lr_at(6, 10, 0.2, "cosine") == pytest.approx(0.5)
    assert lr_at(9, 10, 0.0, "constant") == 1.0


def test_task_loss_ignores_missing_and_keeps_every_head():
    logits = {"a": torch.randn(4, 3, requires_grad=True), "b": torch.randn(4, 2, requires_grad=True)}
    labels = {"a": torch.tensor([0, 2, -100, 1]), "b": torch.full((4,), -100)}
    loss = task_loss(logits, labels, None, {"a": 2.0})
    keep = labels["a"] != -100
    want = 2.0 * torch.nn.functional.cross_entropy(logits["a"][keep], labels["a"][keep])
    assert loss.item() == pytest.approx(want.item())
    loss.backward()
    assert logits["b"].grad is not None and logits["b"].grad.abs().sum() == 0  # took part, learned nothing
    assert task_loss(logits, labels, "a", {}).item() == pytest.approx(want.item() / 2)


def test_train_writes_logs_and_checkpoints(tmp_path, data_file, tiny_checkpoint, capsys):
    cfg = config(tmp_path, data_file, tiny_checkpoint, log_every=4)
    train(cfg)
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["split"] == "train"]  # the training loss every log_every steps, and the last
    assert [r["step"] for r in steps] == [4, 8, 12, 16, 20, 24, 26] and all(math.isfinite(r["loss"]) for r in steps)
    assert set(steps[0]) == {"step", "epoch", "split", "loss", "lr"}
    assert "step 4/26  loss " in capsys.readouterr().err  # stderr is no terminal here: plain lines, not \r
    dev = [r for r in rows if r["split"] == "dev" and "checkpoint" not in r]
    assert {r["task"] for r in dev} == {"topic", "mood"}
    for key in ("step", "epoch", "loss", "accuracy", "macro_f1", "confusion", "lr", "samples_per_s"):
        assert key in dev[0]
    assert {r["split"] for r in rows if r.get("checkpoint") == "best"} == {"dev", "test"}
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert {p["split"] for p in preds} == {"dev", "test"}
    p = preds[0]
    assert set(p) == {"split", "id", "text", "task", "label", "pred", "probs"}
    assert sum(p["probs"].values()) == pytest.approx(1.0, abs=1e-4)
    meta = json.loads((run / "best" / "checkpoint.json").read_text())
    assert meta["tasks"] == {"topic": ["food", "sport", "tech"], "mood": ["negative", "positive"]}
    assert meta["train"]["lr"] == 1e-3 and "torch" in meta["versions"]
    model = MultiTaskModel.from_checkpoint(run / "best")
    out = model.predict(["love this pizza", "awful broken phone"])
    assert set(out[0]) == {"topic", "mood"} and out[0]["topic"][0] in TOPICS and 0 < out[0]["mood"][1] <= 1
    assert not list(run.glob(".*"))  # no temporary or old checkpoint directories left behind


def test_same_seed_same_weights(tmp_path, data_file, tiny_checkpoint):
    train(config(tmp_path / "a", data_file, tiny_checkpoint, epochs=1))
    train(config(tmp_path / "b", data_file, tiny_checkpoint, epochs=1))
    assert_same_weights(weights(tmp_path / "a" / "run"), weights(tmp_path / "b" / "run"))


@pytest.mark.parametrize("kw", [
    {},
    {"mixing": "round_robin", "grad_accum": 2, "unfreeze_every": 3, "layer_decay": 0.8, "schedule": "cosine"},
    {"mixing": "proportional", "temperature": 2.0, "freeze": ["embeddings", "head:mood"], "head": "mlp"},
])
def test_resume_equals_uninterrupted(tmp_path, data_file, tiny_checkpoint, kw):
    train(config(tmp_path / "full", data_file, tiny_checkpoint, **kw))
    train(config(tmp_path / "cut", data_file, tiny_checkpoint, **kw), stop_after=7)  # stops mid-epoch
    train(config(tmp_path / "cut", data_file, tiny_checkpoint, resume=True, **kw))
    assert_same_weights(weights(tmp_path / "full" / "run"), weights(tmp_path / "cut" / "run"))
    assert_same_weights(weights(tmp_path / "full" / "run", "best"), weights(tmp_path / "cut" / "run", "best"))


def test_bf16_autocast_trains(tmp_path, data_file, tiny_checkpoint):
    train(config(tmp_path, data_file, tiny_checkpoint, epochs=1, bf16=True))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows)
    after = weights(tmp_path / "run")
    assert after["bert.layers.0.attn.qkv.weight"].dtype == torch.float32  # autocast leaves the weights fp32
    before = load_file(tiny_checkpoint / "model.safetensors")
    assert not torch.equal(after["bert.layers.0.attn.qkv.weight"][:32],  # its query third (tiny: H = 32)
                           before["encoder.layer.0.attention.self.query.weight"])


def test_embedding_cache_equals_live_encoder(tmp_path, data_file, tiny_checkpoint):
    cfg = config(tmp_path, data_file, tiny_checkpoint, freeze=["backbone"], cache_embeddings=True)
    from minimt.data import Source, load_splits
    from minimt.encoder import SentenceEncoder
    splits = load_splits([Source(**s) for s in cfg.sources])
    model = MultiTaskModel(SentenceEncoder.from_pretrained(cfg.model), {"topic": ["food", "sport", "tech"]})
    for p in model.bert.parameters():
        p.requires_grad_(False)
    cache = EmbeddingCache(model, [ex.text for exs in splits.values() for ex in exs])
    examples = splits["dev"][:10]
    model.eval()  # the heads' dropout off: compare the vectors, not two dropout draws
    with torch.no_grad():
        live = model.classify(model(model.tokenizer.encode([ex.text for ex in examples])))
        cached = model.classify(cache(examples))
    for t in live:
        assert (live[t] - cached[t]).abs().max() < 1e-6
    # and training on the cache ends where training through the frozen encoder ends
    train(cfg)
    train(config(tmp_path / "live", data_file, tiny_checkpoint, freeze=["backbone"]))
    a, b = weights(tmp_path / "run"), weights(tmp_path / "live" / "run")
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k


def test_frozen_backbone_stays_bit_identical(tmp_path, data_file, tiny_checkpoint):
    train(config(tmp_path, data_file, tiny_checkpoint, freeze=["backbone"], epochs=1))
    before = load_file(tiny_checkpoint / "model.safetensors")
    after = weights(tmp_path / "run")
    from minimt.weights import checkpoint_tensors
    after = checkpoint_tensors({k[len("bert."):]: v for k, v in after.items() if k.startswith("bert.")})
    for k, v in after.items():
        assert torch.equal(v, before[k]), k


def test_init_from_copies_encoder_and_matching_heads(tmp_path, data_file, tiny_checkpoint):
    train(config(tmp_path / "a", data_file, tiny_checkpoint, epochs=1))
    src = MultiTaskModel.from_checkpoint(tmp_path / "a" / "run" / "best")
    model = MultiTaskModel.from_checkpoint(tmp_path / "a" / "run" / "best")
    torch.nn.init.zeros_(model.bert.layers[0].ffn.up.weight)
    model.tasks["mood"] = ["negative", "neutral", "positive"]  # other labels: that head must not be copied
    torch.nn.init.zeros_(model.heads["mood"].out.bias)
    msg = init_from(model, tmp_path / "a" / "run" / "best")
    assert msg.endswith("heads ['topic']")
    assert torch.equal(model.bert.layers[0].ffn.up.weight, src.bert.layers[0].ffn.up.weight)
    assert torch.equal(model.heads["topic"].out.weight, src.heads["topic"].out.weight)
    assert model.heads["mood"].out.bias.abs().sum() == 0


def test_config_errors(tmp_path, data_file, tiny_checkpoint):
    with pytest.raises(ValueError, match="task mixing mode 'mixed' is not known"):
        config(tmp_path, data_file, tiny_checkpoint, mixing="mixed")
    with pytest.raises(ValueError, match="cache_embeddings needs the backbone frozen"):
        config(tmp_path, data_file, tiny_checkpoint, cache_embeddings=True)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 1, "learning_rate": 1}))
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['learning_rate'\]"):
        load_config(path)
    path.write_text(json.dumps({"epochs": 1}))
    with pytest.raises(ValueError, match="unknown setting 'lrr'"):
        load_config(path, ["--lrr=1"])
    with pytest.raises(ValueError, match="c.json: setting epochs='two' must be a whole number"):
        load_config(path, ["--epochs=two"])
    assert load_config(path, ["--lr=0.5", "--freeze=[\"backbone\"]"]).freeze == ["backbone"]


def test_interrupted_save_is_recovered(tmp_path, data_file, tiny_checkpoint):
    train(config(tmp_path, data_file, tiny_checkpoint, epochs=1))
    run = tmp_path / "run"
    (run / "last").rename(run / ".last.old-999")  # killed between save's two renames
    assert checkpoint.find(run / "last") == run / ".last.old-999"
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        checkpoint.find(tmp_path / "nothing")


def test_cli_predict_and_evaluate(tmp_path, data_file, tiny_checkpoint):
    train(config(tmp_path, data_file, tiny_checkpoint, epochs=1))
    best = tmp_path / "run" / "best"

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "minimt", *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout
    out = cli("predict", str(best), "love this pizza")
    assert out.splitlines()[0] == "love this pizza" and "topic" in out and "mood" in out
    jl = tmp_path / "in.jsonl"
    jl.write_text('{"text": "great tennis match", "id": 1}\n{"text": "hate my phone"}\n')
    rows = [json.loads(line) for line in cli("predict", str(best), "--jsonl", str(jl)).splitlines()]
    assert [r["text"] for r in rows] == ["great tennis match", "hate my phone"]
    assert set(rows[0]["topic"]) == {"label", "probability"}
    out = cli("evaluate", str(best), "--out", str(tmp_path / "ev"))
    assert "test topic: accuracy" in out
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(metrics) == {"topic", "mood"} and (tmp_path / "ev" / "predictions.jsonl").exists()
    out = cli("evaluate", str(best), "--data", str(data_file), "--label", "topic=topic", "--out", str(tmp_path / "ev2"))
    assert "data topic: accuracy" in out
