"""minimt against the reference implementation, on outputs written by tests/golden/make_golden.py.

Tolerance 1e-5 absolute in float32: both sides run the same math in a different order (fused vs separate
kernels, other batch shapes), which moves the last bits; a real bug (a wrong epsilon, GELU, mask or
weight) moves values by 1e-3 or more.
"""
import pytest
import torch
from safetensors.torch import load_file

from helpers import assert_close
from minimt import cos_sim
from minimt.config import BertConfig
from minimt.model import BertModel
from minimt.weights import load_weights
from conftest import GOLDEN

TOL = 1e-5


def test_token_ids_match_reference(minilm, golden):
    meta, _ = golden
    ours = minilm.tokenizer.encode(meta["texts"])
    for i, (got, want) in enumerate(zip(ours, meta["token_ids"])):
        assert got == want, f"text {i} {meta['texts'][i][:40]!r}: ids {got[:12]}... != reference {want[:12]}..."


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
def test_last_hidden_state_padded_batch(own_minilm, golden, attention):
    meta, ref = golden
    batch = own_minilm.tokenizer([meta["texts"][i] for i in meta["batch"]])
    assert batch["input_ids"].shape[1] == meta["padded_length"]
    own_minilm.model.set_attention(attention)
    with torch.no_grad():
        hidden = own_minilm.model(**batch)  # (B, T, 384)
    for j, i in enumerate(meta["batch"]):
        n = int(batch["attention_mask"][j].sum())  # compare real tokens only: padding rows are undefined
        assert_close(hidden[j, :n], ref[f"hidden.{i}"], TOL, f"last_hidden_state of text {i} ({attention})")


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
def test_sentence_embeddings(own_minilm, golden, attention):
    meta, ref = golden
    own_minilm.model.set_attention(attention)
    emb = own_minilm.encode(meta["texts"])  # packed batches through model.py
    worst = 0.0
    for i, text in enumerate(meta["texts"]):
        worst = max(worst, assert_close(emb[i], ref["embeddings"][i], TOL,
                                        f"embedding of text {i} {text[:30]!r} ({attention})"))
    print(f"{len(meta['texts'])} embeddings ({attention}), maxdiff {worst:.2e}")


def test_compiled_sentence_embeddings(compiled_minilm, golden):
    """The compiled path (torch.compile of the padded forward and pooling), batched."""
    meta, ref = golden
    emb = compiled_minilm.encode(meta["texts"])
    assert compiled_minilm.compiled.fn is not None, "the compiled path fell back to eager"
    worst = 0.0
    for i, text in enumerate(meta["texts"]):
        worst = max(worst, assert_close(emb[i], ref["embeddings"][i], TOL, f"embedding of text {i} {text[:30]!r} "
                                                                          f"(compiled)"))
    print(f"{len(meta['texts'])} embeddings (compiled), maxdiff {worst:.2e}")


def test_one_sentence_per_call(any_minilm, golden):
    """The bench's W3 path: encode(str), a batch of one text (a single run of the packed layout)."""
    meta, ref = golden
    worst = 0.0
    for i, text in enumerate(meta["texts"]):
        worst = max(worst, assert_close(any_minilm.encode(text), ref["embeddings"][i], TOL,
                                        f"embedding of text {i} {text[:30]!r}, encoded alone"))
    print(f"{len(meta['texts'])} embeddings one per call, maxdiff {worst:.2e}")


def test_mission_numbers(any_minilm):
    a, b = any_minilm.encode(["I am eating apple", "I like fruits"])
    assert round(cos_sim(a, b).item(), 4) == 0.5398
    v = any_minilm.encode("This frame work generates embeddings for each sentence")
    assert_close(v[:5], [-0.0087361, -0.011969, 0.0020720, -0.011325, 0.077704], 1e-6,
                 "first five values of the mission's embedding (printed to 5 significant digits)")


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
def test_tiny_bert_base_dialect(attention):
    """bert. prefix, LayerNorm gamma/beta, cls.* heads, 3 token types, eps 1e-7: transformers' BertModel outputs."""
    d = GOLDEN / "tiny_bert"
    cfg = BertConfig.from_dir(d)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.type_vocab_size) == (48, 3, 6, 3)
    assert (cfg.pooling, cfg.normalize, cfg.layer_norm_eps) == ("mean", False, 1e-7)  # plain BERT defaults
    model = load_weights(BertModel(cfg), d / "model.safetensors").eval()
    model.set_attention(attention)
    g = load_file(d / "golden.safetensors")
    assert g["token_type_ids"].max() == 2  # the segment embedding is really exercised
    with torch.no_grad():
        hidden = model(g["input_ids"], g["attention_mask"], g["token_type_ids"])
    for b, n in enumerate(g["attention_mask"].sum(1).tolist()):
        assert_close(hidden[b, :n], g["last_hidden_state"][b, :n], TOL, f"tiny BERT row {b} ({attention})")


@pytest.mark.parametrize("layout", ["packed", "padded", "compiled"])
def test_tiny_bert_gradients_equal_transformers(layout, minilm_dir):
    """The backward: a fixed loss (mean pooling, a fixed linear head, cross-entropy; dropout off) on padded texts of
    mixed lengths; every parameter's gradient == transformers' BertModel's (make_golden.py). compiled: the padded
    forward and its backward through torch.compile, as MultiTaskModel.compile trains."""
    from minimt.encoder import Compiled
    from minimt.model import Packed
    from minimt.tokenizer import Tokenizer
    from minimt.pooling import pool, pool_packed
    from minimt.weights import checkpoint_tensors
    d = GOLDEN / "tiny_bert"
    model = load_weights(BertModel(BertConfig.from_dir(d)), d / "model.safetensors").eval()
    g = load_file(d / "gradients.safetensors")
    mask = g["attention_mask"]
    if layout == "packed":  # how training feeds it: real tokens only, longest first (the golden rows already are)
        packed = Packed.from_ids([row[:n].tolist() for row, n in zip(g["input_ids"], mask.sum(1).tolist())])
        pooled = pool_packed(model(packed), packed, "mean")
    elif layout == "compiled":  # (the tokenizer only pads, with id 0 as this model's config)
        compiled = Compiled(model, Tokenizer(minilm_dir / "tokenizer.json", 40), freezing=False)
        pooled = compiled([row[:n].tolist() for row, n in zip(g["input_ids"], mask.sum(1).tolist())])
        assert compiled.fn is not None, "the compiled path fell back to eager"
    else:
        pooled = pool(model(g["input_ids"], mask), mask, "mean")
    loss = torch.nn.functional.cross_entropy(pooled @ g["head_weight"].T + g["head_bias"], g["labels"])
    loss.backward()
    assert_close(loss.detach().reshape(1), g["loss"], 1e-6, f"loss ({layout})")
    grads = checkpoint_tensors({k: p.grad for k, p in model.named_parameters()})  # Q, K, V cut apart again
    assert set(grads) == {k[len("grad."):] for k in g if k.startswith("grad.")}  # every parameter has a gradient
    worst = max(assert_close(d, g[f"grad.{k}"], TOL, f"gradient of {k} ({layout})") for k, d in grads.items())
    print(f"{len(grads)} gradients ({layout}), maxdiff {worst:.2e}")


def test_compiled_path_does_not_compile_again_for_new_shapes(compiled_minilm, golden):
    """dynamic=True: after a batch of several texts and one of a single text (which gets a graph of its own), a
    stream of new batch sizes and lengths reuses those two graphs; a recompile per shape would cost seconds each."""
    from torch._dynamo.utils import counters
    texts = golden[0]["texts"]
    compiled_minilm.encode(texts[:3])
    compiled_minilm.encode(texts[0])
    before = counters["stats"]["unique_graphs"]
    for n in (2, 5, 1, 9, 4, 1, 7):
        compiled_minilm.encode([t[:17 * n] for t in texts[:n]] if n > 1 else texts[n][:40])
    assert compiled_minilm.compiled.fn is not None
    assert counters["stats"]["unique_graphs"] == before, "the compiled path compiled again for a new shape"
