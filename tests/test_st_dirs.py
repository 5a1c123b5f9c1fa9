"""Any sentence-transformers BERT or DistilBERT directory, loaded as sentence-transformers loads it.

Golden: tests/golden/st/, directories written by sentence-transformers 6 itself (make_golden.py's st_dirs), with
its encode() of the golden texts. Tolerance 1e-5, as for all-MiniLM-L6-v2 (tests/test_golden.py).
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import GOLDEN
from helpers import assert_close
from minimt import SentenceEncoder
from minimt.config import BertConfig

ST = GOLDEN / "st"
TOL = 1e-5
DIRS = {  # directory -> (pooling, normalize, max_seq_length, type_vocab_size) that sentence-transformers used
    "st6_cls_normalize": ("cls", True, 48, 2),
    "st6_max": ("max", False, 64, 2),
    "distilbert": ("mean", False, 64, 0),         # bare save_pretrained: no modules.json, ST's defaults
    "st6_distilbert": ("mean", True, 40, 0),
}


@pytest.fixture(scope="module")
def reference():
    return load_file(ST / "golden.safetensors")


@pytest.fixture(scope="module")
def texts():
    return json.loads((GOLDEN / "minilm.json").read_text(encoding="utf-8"))["texts"]


@pytest.mark.parametrize("name", sorted(DIRS))
@pytest.mark.parametrize("attention", ["sdpa", "manual"])
def test_directory_matches_sentence_transformers(name, attention, reference, texts):
    enc = SentenceEncoder.from_pretrained(ST / name, attention=attention)
    c = enc.config
    assert (c.pooling, c.normalize, c.max_seq_length, c.type_vocab_size) == DIRS[name]
    worst = assert_close(enc.encode(texts), reference[name], TOL, f"{name} ({attention}) vs sentence-transformers")
    print(f"{name} ({attention}): {len(texts)} texts, maxdiff {worst:.2e}")


def test_st6_pooling_mode_names(tmp_path):
    """sentence-transformers 6 writes one "pooling_mode"; the modes minimt lacks are named in the error."""
    d = tmp_path / "m"
    shutil.copytree(ST / "st6_max", d)
    for mode in ("mean", "cls", "max"):
        (d / "1_Pooling/config.json").write_text(json.dumps({"embedding_dimension": 16, "pooling_mode": mode}))
        assert BertConfig.from_dir(d).pooling == mode
    for mode in ("weightedmean", "lasttoken", "mean_sqrt_len_tokens", ["mean", "max"]):
        (d / "1_Pooling/config.json").write_text(json.dumps({"embedding_dimension": 16, "pooling_mode": mode}))
        with pytest.raises(ValueError, match="is not supported; minimt implements exactly one of mean, cls, max"):
            BertConfig.from_dir(d)
    (d / "1_Pooling/config.json").write_text(json.dumps({"pooling_mode_weightedmean_tokens": True}))
    with pytest.raises(ValueError, match=r"pooling \['weightedmean'\] is not supported"):
        BertConfig.from_dir(d)


def test_old_module_paths_and_transformer_subfolder(tmp_path, reference, texts):
    """The pre-6 type paths (sentence_transformers.models.X) and a Transformer saved in 0_Transformer/."""
    d = tmp_path / "old"
    (d / "0_Transformer").mkdir(parents=True)
    src = ST / "st6_cls_normalize"
    for f in src.iterdir():
        if f.is_file() and f.name not in ("modules.json", "config_sentence_transformers.json", "README.md"):
            shutil.copy(f, d / "0_Transformer" / f.name)
    shutil.copytree(src / "1_Pooling", d / "1_Pooling")
    (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    enc = SentenceEncoder.from_pretrained(d)
    assert_close(enc.encode(texts), reference["st6_cls_normalize"], TOL, "0_Transformer layout")


@pytest.mark.parametrize("kind, message", [
    ("sentence_transformers.models.Dense", "lists a Dense module"),
    ("sentence_transformers.sentence_transformer.modules.dense.Dense", "lists a Dense module"),
    ("sentence_transformers.models.LayerNorm", "lists a LayerNorm module"),
])
def test_unimplemented_modules_are_named(tmp_path, kind, message):
    d = tmp_path / "m"
    shutil.copytree(ST / "st6_max", d)
    modules = json.loads((d / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_X", "type": kind})
    (d / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match=message):
        SentenceEncoder.from_pretrained(d)


@pytest.mark.parametrize("modules, message", [
    ({"0": "Transformer"}, r"modules.json holds a JSON dict; modules.json is a list of modules"),
    ([{"idx": 0, "name": "0", "path": ""}], r"modules.json: module 0 .* needs a string \"type\""),
    (["Pooling"], r"modules.json: module 0 \(\"Pooling\"\) needs a string \"type\""),
])
def test_a_malformed_modules_json_is_named(tmp_path, modules, message):
    d = tmp_path / "m"
    shutil.copytree(ST / "st6_max", d)
    (d / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match=message):
        SentenceEncoder.from_pretrained(d)


def test_non_bert_architectures_are_named(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(ST / "distilbert", d)
    for change, message in [({"model_type": "roberta"}, "model_type 'roberta' is not supported"),
                            ({"activation": "relu"}, "activation 'relu' is not supported")]:
        cfg = json.loads((ST / "distilbert/config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(ValueError, match=message):
            SentenceEncoder.from_pretrained(d)


def test_hub_id_loads_offline_from_the_hugging_face_cache(tmp_path, reference, texts):
    """A Hub cache laid out as huggingface_hub lays it out (refs/main -> snapshots/<commit>/), read through
    huggingface_hub itself with HF_HUB_OFFLINE=1, in a fresh process (huggingface_hub reads the variables at
    import). Nothing is copied to weights/: it only gets the record of the sha256 check (download.check_weights),
    which never goes into the Hugging Face cache."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--some-org--tiny-cls"
    shutil.copytree(ST / "st6_cls_normalize", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    out = tmp_path / "emb.npy"
    code = ("import sys, numpy as np; from minimt import SentenceEncoder; "
            "enc = SentenceEncoder.from_pretrained('some-org/tiny-cls'); "
            f"np.save({str(out)!r}, enc.encode({texts!r}))")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "MINIMT_WEIGHTS": str(tmp_path / "weights")}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert_close(np.load(out), reference["st6_cls_normalize"], TOL, "Hub id from the HF cache")
    written = [p.relative_to(tmp_path / "weights") for p in (tmp_path / "weights").rglob("*") if p.is_file()]
    assert [str(p) for p in written] == [f".hub-verified/some-org--tiny-cls--{commit}.json"]

    run = subprocess.run([sys.executable, "-c", code.replace("tiny-cls", "not-cached")], env=env,
                         capture_output=True, text=True)
    assert run.returncode != 0 and "could not fetch some-org/not-cached" in run.stderr
