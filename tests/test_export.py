"""Fine-tuned models leave as standard sentence-transformers directories (minimt/io/export.py).

Here: minimt's own round trip, and the tensor names and shapes against transformers' BertModel (golden list from
make_golden.py). That sentence-transformers and transformers load the exports is checked by `make interop` in
the dev environment (tests/interop.py), which needs those libraries.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import GOLDEN
from helpers import assert_close
from minimt import SentenceEncoder
from minimt.multitask import MultiTaskModel
from minimt.train import TrainConfig, train

TEXTS = ["I am eating apple", "The new movie is awesome!", "Café crème brûlée", "", "word " * 300]


def test_minilm_round_trip_and_bert_key_list(minilm, tmp_path):
    out = minilm.save(tmp_path / "export")
    again = SentenceEncoder.from_pretrained(out)
    assert again.config == minilm.config
    assert np.array_equal(again.encode(TEXTS), minilm.encode(TEXTS))  # the same tensors: bit-identical
    want = json.loads((GOLDEN / "bert_keys.json").read_text())["keys"]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        got = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []  # missing, unexpected
    assert {k: got[k] for k in want if got[k] != want[k]} == {}
    hf = json.loads((out / "config.json").read_text())
    assert hf["model_type"] == "bert" and hf["architectures"] == ["BertModel"]
    modules = [m["type"].rsplit(".", 1)[1] for m in json.loads((out / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Normalize"]
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 256


@pytest.mark.parametrize("name", ["st6_cls_normalize", "st6_max", "st6_distilbert"])
def test_exported_st_directories_keep_their_outputs(name, tmp_path):
    """CLS / max pooling, with and without Normalize, and a DistilBERT (written as a BERT with a zero
    token-type row): after export, the embeddings sentence-transformers computed on the original."""
    texts = json.loads((GOLDEN / "minilm.json").read_text(encoding="utf-8"))["texts"]
    out = SentenceEncoder.from_pretrained(GOLDEN / "st" / name).save(tmp_path / name)
    enc = SentenceEncoder.from_pretrained(out)
    assert json.loads((out / "config.json").read_text())["model_type"] == "bert"
    assert_close(enc.encode(texts), load_file(GOLDEN / "st" / "golden.safetensors")[name], 1e-5,
                 f"{name} exported and reloaded vs sentence-transformers")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_file, tiny_checkpoint):
    run = tmp_path_factory.mktemp("run")
    train(TrainConfig(sources=[{"path": str(data_file), "text": "text", "labels": {"topic": "topic", "mood": "mood"}}],
                      model=str(tiny_checkpoint), max_steps=6, batch_size=8, lr=1e-3, eval_every=3,
                      out_dir=str(run), seed=1))
    return run / "best"


def test_training_checkpoint_loads_as_an_encoder(trained):
    model = MultiTaskModel.from_checkpoint(trained)
    enc = SentenceEncoder.from_pretrained(trained)
    for k, v in model.bert.state_dict().items():
        assert torch.equal(enc.model.state_dict()[k], v), k
    with torch.no_grad():
        want = model(model.tokenizer.encode(["hello world"]))  # pooled, normalised if the config says
    assert_close(enc.encode(["hello world"]), want, 1e-6, "SentenceEncoder from a training checkpoint")


def test_cli_export_rebuilds_the_multitask_model(trained, tmp_path):
    out = tmp_path / "exported"
    run = subprocess.run([sys.executable, "-m", "minimt", "export", str(trained), str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert str(out) in run.stdout and "heads: mood, topic" in run.stdout
    before, after = MultiTaskModel.from_checkpoint(trained), MultiTaskModel.from_checkpoint(out)
    assert after.tasks == before.tasks and after.head_kind == before.head_kind
    texts = ["great football match", "awful broken phone battery", "I love this soup"]
    assert after.predict(texts) == before.predict(texts)
    assert np.array_equal(SentenceEncoder.from_pretrained(out).encode(texts),
                          SentenceEncoder.from_pretrained(trained).encode(texts))
    assert not list(tmp_path.glob(".*"))  # written through a temporary directory, nothing left behind


def test_export_of_a_missing_checkpoint_is_one_clear_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "minimt", "export", str(tmp_path / "nope"), str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "no checkpoint directory there" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "o").exists()
