"""The loader: both dialects map through the rename table, and every mismatch raises an error naming it."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from minimt.config import BertConfig
from minimt.model import BertModel
from minimt.weights import load_weights, rename
from conftest import GOLDEN

TINY = GOLDEN / "tiny_bert"


def test_rename_table_both_dialects():
    assert rename("embeddings.LayerNorm.weight") == ("embeddings.ln.weight", None)
    assert rename("bert.embeddings.LayerNorm.gamma") == ("embeddings.ln.weight", None)
    assert rename("bert.encoder.layer.11.output.LayerNorm.beta") == ("layers.11.ln2.bias", None)
    assert rename("encoder.layer.3.attention.self.query.weight") == ("layers.3.attn.qkv.weight", 0)
    assert rename("encoder.layer.3.attention.self.value.bias") == ("layers.3.attn.qkv.bias", 2)
    for ignored in ["pooler.dense.weight", "bert.pooler.dense.bias", "cls.predictions.bias",
                    "cls.seq_relationship.weight", "embeddings.position_ids"]:
        assert rename(ignored) is None


def test_minilm_loads_every_tensor(minilm_dir):
    model = load_weights(BertModel(BertConfig.from_dir(minilm_dir)), minilm_dir / "model.safetensors")
    ref = load_file(minilm_dir / "model.safetensors")
    assert torch.equal(model.layers[5].ffn.down.weight, ref["encoder.layer.5.output.dense.weight"])
    assert torch.equal(model.embeddings.ln.bias, ref["embeddings.LayerNorm.bias"])


def broken_copy(tmp_path, edit):
    """The tiny bert-dialect checkpoint with one edit applied to its tensors."""
    d = tmp_path / "ckpt"
    shutil.copytree(TINY, d)
    state = load_file(d / "model.safetensors")
    edit(state)
    save_file(state, d / "model.safetensors")
    return d


def load(d):
    return load_weights(BertModel(BertConfig.from_dir(d)), d / "model.safetensors")


def test_missing_key_is_named(tmp_path):
    d = broken_copy(tmp_path, lambda s: s.pop("bert.encoder.layer.1.output.dense.weight"))
    with pytest.raises(ValueError, match=r"missing, e\.g\. 'encoder\.layer\.1\.output\.dense\.weight'"):
        load(d)


def test_unexpected_key_is_named(tmp_path):
    d = broken_copy(tmp_path, lambda s: s.update({"bert.encoder.layer.0.adapter.weight": torch.zeros(2)}))
    with pytest.raises(ValueError, match=r"unexpected tensor 'bert\.encoder\.layer\.0\.adapter\.weight'"):
        load(d)


def test_extra_layer_is_named(tmp_path):
    def add_layer(s):
        s["bert.encoder.layer.7.output.dense.bias"] = torch.zeros(48)
    with pytest.raises(ValueError, match=r"'bert\.encoder\.layer\.7\.output\.dense\.bias' has no place"):
        load(broken_copy(tmp_path, add_layer))


def test_wrong_shape_is_named(tmp_path):
    def shrink(s):
        s["bert.encoder.layer.2.attention.self.key.weight"] = torch.zeros(48, 40)
    with pytest.raises(ValueError, match=r"'bert\.encoder\.layer\.2\.attention\.self\.key\.weight' has shape "
                                         r"\(48, 40\) but its third of 'layers\.2\.attn\.qkv\.weight' "
                                         r"needs \(48, 48\)"):
        load(broken_copy(tmp_path, shrink))


def test_config_that_does_not_match_weights(tmp_path):
    d = broken_copy(tmp_path, lambda s: None)
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_hidden_layers"] = 4
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"missing, e\.g\. 'encoder\.layer\.3\..*num_hidden_layers=4"):
        load(d)


def test_duplicate_dialects_are_refused(tmp_path):
    def both(s):
        s["embeddings.LayerNorm.weight"] = s["bert.embeddings.LayerNorm.gamma"].clone()
    with pytest.raises(ValueError, match="both map to 'embeddings.ln.weight'"):
        load(broken_copy(tmp_path, both))


@pytest.mark.parametrize("key, value, message", [
    ("hidden_act", "relu", "hidden_act 'relu' is not supported"),
    ("model_type", "roberta", "model_type 'roberta' is not supported"),
    ("position_embedding_type", "relative_key", "position_embedding_type 'relative_key' is not supported"),
    ("num_attention_heads", 5, "not divisible by num_attention_heads 5"),
])
def test_unsupported_config_raises(tmp_path, key, value, message):
    d = broken_copy(tmp_path, lambda s: None)
    cfg = json.loads((d / "config.json").read_text())
    cfg[key] = value
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=message):
        BertConfig.from_dir(d)


def test_missing_config_and_unsupported_modules(tmp_path, minilm_dir):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        BertConfig.from_dir(tmp_path)
    d = tmp_path / "st"
    shutil.copytree(minilm_dir, d, ignore=shutil.ignore_patterns("model.safetensors"))
    cfg = BertConfig.from_dir(d)
    assert (cfg.max_seq_length, cfg.pooling, cfg.normalize) == (256, "mean", True)
    modules = json.loads((d / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (d / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="lists a Dense module"):
        BertConfig.from_dir(d)
    modules.pop()
    (d / "modules.json").write_text(json.dumps(modules))
    pool = json.loads((d / "1_Pooling/config.json").read_text())
    pool["pooling_mode_max_tokens"] = True
    (d / "1_Pooling/config.json").write_text(json.dumps(pool))
    with pytest.raises(ValueError, match=r"pooling \['mean', 'max'\] is not supported"):
        BertConfig.from_dir(d)
