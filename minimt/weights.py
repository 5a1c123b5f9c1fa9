"""Loading a pretrained BERT checkpoint (model.safetensors) into minimt's BertModel.

Checkpoints name their tensors after Hugging Face's module tree; minimt's tree is flatter. The tables below are the
whole mapping, one line per tensor kind. Two BERT dialects are in circulation and both load:
  bare keys   embeddings.word_embeddings.weight, encoder.layer.0..., pooler.dense.weight   (all-MiniLM-L6-v2)
  BERT-style  bert.embeddings..., LayerNorm.gamma / .beta, plus cls.* pre-training heads     (bert-base-uncased)
DistilBERT names the same tensors its own way (transformer.layer.0.attention.q_lin, sa_layer_norm, ffn.lin1, ...)
and has no token-type table; its lines map onto the same minimt names, so one model.py runs both.
Every tensor is then checked: no key missing, none left over, every shape equal, before anything is copied, and
no NaN or inf among the values copied.
Saving goes the other way (checkpoint_name): minimt names -> transformers' BertModel names.
"""
import re

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

# checkpoint name (after dialect clean-up) -> minimt name; {i} is the layer number
BERT_RENAMES = [
    ("embeddings.word_embeddings.weight", "embeddings.word.weight"),
    ("embeddings.position_embeddings.weight", "embeddings.position.weight"),
    ("embeddings.token_type_embeddings.weight", "embeddings.token_type.weight"),
    ("embeddings.LayerNorm.{p}", "embeddings.ln.{p}"),
    ("encoder.layer.{i}.attention.self.query.{p}", "layers.{i}.attn.query.{p}"),
    ("encoder.layer.{i}.attention.self.key.{p}", "layers.{i}.attn.key.{p}"),
    ("encoder.layer.{i}.attention.self.value.{p}", "layers.{i}.attn.value.{p}"),
    ("encoder.layer.{i}.attention.output.dense.{p}", "layers.{i}.attn.out.{p}"),
    ("encoder.layer.{i}.attention.output.LayerNorm.{p}", "layers.{i}.ln1.{p}"),
    ("encoder.layer.{i}.intermediate.dense.{p}", "layers.{i}.ffn.up.{p}"),
    ("encoder.layer.{i}.output.dense.{p}", "layers.{i}.ffn.down.{p}"),
    ("encoder.layer.{i}.output.LayerNorm.{p}", "layers.{i}.ln2.{p}"),
]
DISTILBERT_RENAMES = [  # the embeddings are named as in BERT (and have no token_type_embeddings)
    ("transformer.layer.{i}.attention.q_lin.{p}", "layers.{i}.attn.query.{p}"),
    ("transformer.layer.{i}.attention.k_lin.{p}", "layers.{i}.attn.key.{p}"),
    ("transformer.layer.{i}.attention.v_lin.{p}", "layers.{i}.attn.value.{p}"),
    ("transformer.layer.{i}.attention.out_lin.{p}", "layers.{i}.attn.out.{p}"),
    ("transformer.layer.{i}.sa_layer_norm.{p}", "layers.{i}.ln1.{p}"),
    ("transformer.layer.{i}.ffn.lin1.{p}", "layers.{i}.ffn.up.{p}"),
    ("transformer.layer.{i}.ffn.lin2.{p}", "layers.{i}.ffn.down.{p}"),
    ("transformer.layer.{i}.output_layer_norm.{p}", "layers.{i}.ln2.{p}"),
]
RENAMES = BERT_RENAMES + DISTILBERT_RENAMES
# present in checkpoints, deliberately not loaded:
#   pooler.*        BERT's next-sentence pooler (tanh on [CLS]); sentence-transformers never uses it
#   cls.*           masked-LM / next-sentence prediction heads from pre-training
#   vocab_*         DistilBERT's masked-LM head (DistilBertForMaskedLM)
#   *.position_ids  a constant arange(512) buffer that older transformers versions saved
IGNORED = re.compile(r"^(pooler\.|cls\.|vocab_(transform|layer_norm|projector)\.)|position_ids$")


def _compile(pattern):
    # "{i}" matches a layer number, "{p}" matches weight or bias; everything else is literal
    rx = re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(f"^{rx}$")


_RULES = [(_compile(src), dst) for src, dst in RENAMES]
_REVERSE = [(_compile(dst), src) for src, dst in BERT_RENAMES]


def rename(key):
    """Checkpoint key -> minimt key, or None for keys we ignore. Unknown keys raise."""
    # BERT-style: the encoder sits under bert. (or distilbert.), next to the pre-training heads
    key = re.sub(r"^(bert|distilbert)\.", "", key)
    # TF-era LayerNorm names (gamma = scale, beta = shift)
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
    key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
    if IGNORED.search(key):
        return None
    for rx, dst in _RULES:
        m = rx.match(key)
        if m:
            return dst.format(**m.groupdict())
    raise KeyError(key)


def checkpoint_name(ours):
    """minimt key -> transformers' BertModel key (the bare dialect): for error messages and for saving."""
    for rx, src in _REVERSE:
        m = rx.match(ours)
        if m:
            return src.format(**m.groupdict())
    return ours


PRETRAINED_FIX = "delete its directory and fetch it again (`python -m minimt weights NAME`), or restore a good copy"


def load_weights(model, path):
    """Copy every tensor of model.safetensors at `path` into `model` (a minimt BertModel), checking as it goes."""
    expected = model.state_dict()
    found = {}  # minimt key -> checkpoint key
    with open_safetensors(path, PRETRAINED_FIX) as f:
        for ckpt_key in f.keys():
            try:
                ours = rename(ckpt_key)
            except KeyError:
                raise ValueError(f"{path}: unexpected tensor {ckpt_key!r}; it matches no line of the rename table "
                               f"in minimt/weights.py. Is this a BERT checkpoint?") from None
            if ours is None:
                continue
            if ours in found:
                raise ValueError(f"{path}: tensors {found[ours]!r} and {ckpt_key!r} both map to {ours!r}")
            found[ours] = ckpt_key

        missing = sorted(set(expected) - set(found))
        if missing:
            raise ValueError(f"{path}: {len(missing)} tensor(s) missing, e.g. {checkpoint_name(missing[0])!r} "
                           f"(model has {len(expected)}, checkpoint provides {len(found)}). Does config.json "
                           f"(num_hidden_layers={model.config.num_hidden_layers}) match the weights?")
        extra = sorted(set(found) - set(expected))
        if extra:
            raise ValueError(f"{path}: tensor {found[extra[0]]!r} has no place in the model "
                           f"(config.json has num_hidden_layers={model.config.num_hidden_layers})")
        assert len(found) == len(expected)

        for ours, ckpt_key in found.items():
            shape = tuple(f.get_slice(ckpt_key).get_shape())  # reads the header only, not the data
            if shape != tuple(expected[ours].shape):
                raise ValueError(f"{path}: {ckpt_key!r} has shape {shape} but {ours!r} needs "
                                 f"{tuple(expected[ours].shape)}; config.json does not match the weights")

        params = dict(model.named_parameters())
        with torch.no_grad():
            for ours, ckpt_key in found.items():
                tensor = f.get_tensor(ckpt_key)
                check_finite(path, ckpt_key, tensor, PRETRAINED_FIX)
                params[ours].copy_(tensor)  # copy_ also casts to the model's dtype
    return model


def open_safetensors(path, fix):
    """safe_open, with a cut-off or damaged file reported as the file it is and `fix`, what to do about it."""
    try:
        return safe_open(str(path), framework="pt")
    except SafetensorError as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}): it was cut off or damaged; {fix}") from None


def read_tensors(path, fix):
    """Every tensor of the safetensors file at `path`, each checked by check_finite."""
    try:
        state = load_file(path)
    except SafetensorError as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}): it was cut off or damaged; {fix}") from None
    for key, tensor in state.items():
        check_finite(path, key, tensor, fix)
    return state


def check_finite(path, key, tensor, fix):
    """A NaN or inf among stored weights (a damaged file, a run that diverged) would turn every output into NaN far
    from its cause: refuse it here, naming the tensor."""
    # the sum is NaN or inf whenever any element is, and one sum costs ~1/15 of isfinite(t).all() on CPU; the exact
    # test runs only when the sum is not finite (a NaN, or finite values whose sum overflowed, as in float16)
    if tensor.is_floating_point() and not torch.isfinite(tensor.sum()) and not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{path}: tensor {key!r} holds {bad} NaN/inf value(s) of {tensor.numel()}; {fix}")
