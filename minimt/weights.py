"""Loading a pretrained BERT checkpoint (model.safetensors) into minimt's BertModel.

Checkpoints name their tensors after Hugging Face's module tree; minimt's tree is flatter. The tables below are the
whole mapping, one line per tensor kind. Two BERT dialects are in circulation and both load:
  bare keys   embeddings.word_embeddings.weight, encoder.layer.0..., pooler.dense.weight   (all-MiniLM-L6-v2)
  BERT-style  bert.embeddings..., LayerNorm.gamma / .beta, plus cls.* pre-training heads     (bert-base-uncased)
DistilBERT names the same tensors its own way (transformer.layer.0.attention.q_lin, sa_layer_norm, ffn.lin1, ...)
and has no token-type table; its lines map onto the same minimt names, so one model.py runs both.
Every tensor is then checked: no key missing, none left over, every shape equal, before anything is copied, and
no NaN or inf among the values copied.
Saving goes the other way (checkpoint_tensors): minimt names -> transformers' BertModel names.
"""
import re

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from minimt.errors import UserError

# checkpoint name (after dialect clean-up) -> (minimt name, part); {i} is the layer number. Part None: the whole
# tensor. Part 0, 1 or 2: the checkpoint's query, key and value tensors are the three thirds (along dim 0) of one
# stacked qkv tensor in minimt, so attention projects Q, K and V with one matmul (nanoGPT's c_attn does the same).
STACKED = 3
BERT_RENAMES = [
    ("embeddings.word_embeddings.weight", "embeddings.word.weight", None),
    ("embeddings.position_embeddings.weight", "embeddings.position.weight", None),
    ("embeddings.token_type_embeddings.weight", "embeddings.token_type.weight", None),
    ("embeddings.LayerNorm.{p}", "embeddings.ln.{p}", None),
    ("encoder.layer.{i}.attention.self.query.{p}", "layers.{i}.attn.qkv.{p}", 0),
    ("encoder.layer.{i}.attention.self.key.{p}", "layers.{i}.attn.qkv.{p}", 1),
    ("encoder.layer.{i}.attention.self.value.{p}", "layers.{i}.attn.qkv.{p}", 2),
    ("encoder.layer.{i}.attention.output.dense.{p}", "layers.{i}.attn.out.{p}", None),
    ("encoder.layer.{i}.attention.output.LayerNorm.{p}", "layers.{i}.ln1.{p}", None),
    ("encoder.layer.{i}.intermediate.dense.{p}", "layers.{i}.ffn.up.{p}", None),
    ("encoder.layer.{i}.output.dense.{p}", "layers.{i}.ffn.down.{p}", None),
    ("encoder.layer.{i}.output.LayerNorm.{p}", "layers.{i}.ln2.{p}", None),
]
DISTILBERT_RENAMES = [  # the embeddings are named as in BERT (and have no token_type_embeddings)
    ("transformer.layer.{i}.attention.q_lin.{p}", "layers.{i}.attn.qkv.{p}", 0),
    ("transformer.layer.{i}.attention.k_lin.{p}", "layers.{i}.attn.qkv.{p}", 1),
    ("transformer.layer.{i}.attention.v_lin.{p}", "layers.{i}.attn.qkv.{p}", 2),
    ("transformer.layer.{i}.attention.out_lin.{p}", "layers.{i}.attn.out.{p}", None),
    ("transformer.layer.{i}.sa_layer_norm.{p}", "layers.{i}.ln1.{p}", None),
    ("transformer.layer.{i}.ffn.lin1.{p}", "layers.{i}.ffn.up.{p}", None),
    ("transformer.layer.{i}.ffn.lin2.{p}", "layers.{i}.ffn.down.{p}", None),
    ("transformer.layer.{i}.output_layer_norm.{p}", "layers.{i}.ln2.{p}", None),
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


_RULES = [(_compile(src), dst, part) for src, dst, part in RENAMES]
_REVERSE = [(_compile(dst), src, part) for src, dst, part in BERT_RENAMES]


def rename(key):
    """Checkpoint key -> (minimt key, part), or None for keys we ignore. Unknown keys raise."""
    # BERT-style: the encoder sits under bert. (or distilbert.), next to the pre-training heads
    key = re.sub(r"^(bert|distilbert)\.", "", key)
    # TF-era LayerNorm names (gamma = scale, beta = shift)
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
    key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
    if IGNORED.search(key):
        return None
    for rx, dst, part in _RULES:
        m = rx.match(key)
        if m:
            return dst.format(**m.groupdict()), part
    raise KeyError(key)


def is_stacked(ours):
    return any(rx.match(ours) and part is not None for rx, _, part in _REVERSE)


def checkpoint_name(ours, part=None):
    """minimt key (and part, for stacked tensors) -> transformers' BertModel key (the bare dialect)."""
    for rx, src, p in _REVERSE:
        m = rx.match(ours)
        if m and p == part:
            return src.format(**m.groupdict())
    return ours


def checkpoint_tensors(state):
    """minimt's tensors -> transformers' BertModel names, each stacked tensor cut back into its parts."""
    out = {}
    for k, v in state.items():
        if is_stacked(k):
            out.update({checkpoint_name(k, i): t for i, t in enumerate(v.chunk(STACKED))})
        else:
            out[checkpoint_name(k)] = v
    return out


PRETRAINED_FIX = "delete its directory and fetch it again (`python -m minimt weights NAME`), or restore a good copy"


def load_weights(model, path):
    """Copy every tensor of model.safetensors at `path` into `model` (a minimt BertModel), checking as it goes."""
    # every place a checkpoint tensor must fill: (minimt key, part) -> its shape; a stacked tensor has STACKED parts
    expected = {}
    for k, v in model.state_dict().items():
        for part in range(STACKED) if is_stacked(k) else [None]:
            expected[k, part] = tuple(v.shape) if part is None else (v.shape[0] // STACKED, *v.shape[1:])
    found = {}  # (minimt key, part) -> checkpoint key
    with open_safetensors(path, PRETRAINED_FIX) as f:
        for ckpt_key in f.keys():
            try:
                ours = rename(ckpt_key)
            except KeyError:
                raise UserError(f"{path}: unexpected tensor {ckpt_key!r}; it matches no line of the rename table "
                               f"in minimt/weights.py. Is this a BERT checkpoint?") from None
            if ours is None:
                continue
            if ours in found:
                raise UserError(f"{path}: tensors {found[ours]!r} and {ckpt_key!r} both map to {ours[0]!r}")
            found[ours] = ckpt_key

        missing = sorted(set(expected) - set(found), key=str)
        if missing:
            raise UserError(f"{path}: {len(missing)} tensor(s) missing, e.g. {checkpoint_name(*missing[0])!r} "
                           f"(model has {len(expected)}, checkpoint provides {len(found)}). Does config.json "
                           f"(num_hidden_layers={model.config.num_hidden_layers}) match the weights?")
        extra = sorted(set(found) - set(expected), key=str)
        if extra:
            raise UserError(f"{path}: tensor {found[extra[0]]!r} has no place in the model "
                           f"(config.json has num_hidden_layers={model.config.num_hidden_layers})")
        assert len(found) == len(expected)

        for ours, ckpt_key in found.items():
            shape = tuple(f.get_slice(ckpt_key).get_shape())  # reads the header only, not the data
            if shape != expected[ours]:
                third = "" if ours[1] is None else "its third of "  # a part of a stacked tensor
                raise UserError(f"{path}: {ckpt_key!r} has shape {shape} but {third}{ours[0]!r} needs "
                                f"{expected[ours]}; config.json does not match the weights")

        params = dict(model.named_parameters())
        with torch.no_grad():
            for (ours, part), ckpt_key in found.items():
                tensor = f.get_tensor(ckpt_key)
                check_finite(path, ckpt_key, tensor, PRETRAINED_FIX)
                target = params[ours] if part is None else params[ours].chunk(STACKED)[part]  # a view: a third
                target.copy_(tensor)  # copy_ also casts to the model's dtype
    return model


def open_safetensors(path, fix):
    """safe_open, with a cut-off or damaged file reported as the file it is and `fix`, what to do about it."""
    try:
        return safe_open(str(path), framework="pt")
    except SafetensorError as e:
        raise UserError(f"{path} is not a readable safetensors file ({e}): it was cut off or damaged; {fix}") from None


def read_tensors(path, fix):
    """Every tensor of the safetensors file at `path`, each checked by check_finite."""
    try:
        state = load_file(path)
    except SafetensorError as e:
        raise UserError(f"{path} is not a readable safetensors file ({e}): it was cut off or damaged; {fix}") from None
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
        raise UserError(f"{path}: tensor {key!r} holds {bad} NaN/inf value(s) of {tensor.numel()}; {fix}")
