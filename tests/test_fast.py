"""The fast engine (minimt/fast.py) against the readable one (model.py): same weights, same numbers.

Tolerance 1e-6 in float32: the engines differ only in summation order (packed vs padded rows, fused QKV, the bias
added after the residual), which moves the last bits; the golden tests hold both engines to the reference too.
"""
import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close
from minimt import SentenceEncoder
from minimt.config import BertConfig
from minimt.fast import FastBert, runs
from minimt.model import BertModel
from minimt.tokenizer import Tokenizer

TEXTS = ["", "a", "A man is playing a guitar.", "Someone plays the guitar!", "The stock market fell sharply today.",
         "word " * 300, "two words", "Tokens: ünïcödé, emoji 🙂, digits 12345.", "x y", "short one", "short two"]


@pytest.fixture(params=["stacked", "separate"])
def qkv(request, monkeypatch):
    """Run a test with both Q/K/V paths: one stacked matmul (big batches) and three (a few tokens)."""
    monkeypatch.setattr("minimt.fast.FUSED_QKV_MIN_TOKENS", 0 if request.param == "stacked" else 10**9)
    return request.param


def engines(enc):
    return (SentenceEncoder(enc.model, enc.tokenizer, "fast"), SentenceEncoder(enc.model, enc.tokenizer, "readable"))


def test_runs_of_equal_length():
    assert runs([5, 5, 3, 3, 3, 1]) == [(0, 2, 5), (10, 3, 3), (19, 1, 1)]
    assert runs([]) == []


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_fast_equals_readable_minilm(minilm, pooling, qkv):
    fast, readable = engines(minilm)
    old = minilm.config.pooling
    minilm.config.pooling = pooling
    try:
        a, b = fast.encode(TEXTS, normalize=False), readable.encode(TEXTS, normalize=False)
    finally:
        minilm.config.pooling = old
    assert_close(a, b, 1e-5 if pooling == "max" else 2e-6, f"fast vs readable, {pooling} pooling (unnormalised)")


@pytest.mark.parametrize("max_tokens", [1, 64, 4096])
def test_fast_equals_readable_any_batching(tiny_encoder, max_tokens, qkv):
    """A random tiny model (weights far from a trained checkpoint's) with every batch shape from 1 text up."""
    fast, readable = engines(tiny_encoder)
    texts = TEXTS * 3
    assert_close(fast.encode(texts, max_tokens=max_tokens), readable.encode(texts, batch_size=5), 1e-6,
                 f"tiny model, fast (max_tokens={max_tokens}) vs readable (batch 5)")


def test_fast_follows_weight_changes(tiny_encoder):
    """Q, K, V are stacked afresh each call, so in-place weight changes (training, loading) show at once."""
    fast, readable = engines(tiny_encoder)
    before = fast.encode(TEXTS)
    with torch.no_grad():
        tiny_encoder.model.layers[0].attn.value.weight.mul_(3.0)
    try:
        after = fast.encode(TEXTS)
        assert abs(after - before).max() > 1e-3, "changing a value weight did not change the fast engine's output"
        assert_close(after, readable.encode(TEXTS), 1e-6, "fast vs readable after a weight change")
    finally:
        with torch.no_grad():
            tiny_encoder.model.layers[0].attn.value.weight.div_(3.0)


def test_fast_bfloat16_close_to_readable(minilm_dir):
    enc = SentenceEncoder.from_pretrained(minilm_dir, dtype="bfloat16")
    fast, readable = engines(enc)
    a, b = fast.encode(TEXTS), readable.encode(TEXTS)
    assert (a * b).sum(1).min() > 0.999, "bf16 fast and readable embeddings point in different directions"


def test_token_budget_batches():
    ids = [[1] * n for n in (3, 9, 1, 9, 4, 20, 2)]
    batches = list(Tokenizer.token_batches(ids, max_tokens=18))
    assert sorted(i for idx, _ in batches for i in idx) == list(range(len(ids)))   # every text exactly once
    for idx, b in batches:
        assert [len(x) for x in b] == sorted((len(x) for x in b), reverse=True)   # longest first
        assert len(b) == 1 or len(b) * len(b[0]) <= 18                            # padded size within budget
    assert [len(b) for _, b in batches] == [1, 2, 4]  # 20 alone (over budget), 9+9, 4+3+2+1
    assert [len(b) for _, b in Tokenizer.token_batches(ids, max_tokens=None, batch_size=3)] == [3, 3, 1]


def test_fast_rejects_what_it_cannot_do(minilm_dir, tiny_encoder):
    with pytest.raises(ValueError, match="longest first"):
        FastBert(tiny_encoder.model)([[101, 102], [101, 7, 102]])
    with pytest.raises(ValueError, match="engine='readable'"):
        SentenceEncoder.from_pretrained(minilm_dir, attention="manual")
    with pytest.raises(ValueError, match="engine 'turbo' is not known"):
        SentenceEncoder(tiny_encoder.model, tiny_encoder.tokenizer, "turbo")
    assert SentenceEncoder.from_pretrained(minilm_dir, attention="manual", engine="readable").engine == "readable"


def test_tiny_config_unpadded_equals_padded():
    """Straight on the modules, no tokenizer: FastBert's mean pooling == BertModel + masked mean."""
    torch.manual_seed(1)
    model = BertModel(BertConfig.tiny()).eval()
    ids = [[5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [3, 4, 2], [1]]
    B, T = len(ids), 5
    input_ids = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, x in enumerate(ids):
        input_ids[b, :len(x)], mask[b, :len(x)] = torch.tensor(x), 1
    with torch.no_grad():
        h = model(input_ids, mask)                                          # (B, T, H)
    want = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)         # (B, H)
    assert_close(FastBert(model)(ids), want, 1e-6, "FastBert vs BertModel on hand-made ids")


@pytest.mark.parametrize("freeze_to", [0, 1])
def test_fast_training_gradients_equal_readable(tiny_encoder, freeze_to, qkv):
    """Dropout off: loss and every gradient of the packed forward == the padded one (layers below freeze_to frozen)."""
    from minimt.multitask import MultiTaskModel
    tasks = {"topic": ["a", "b", "c"]}
    batch = tiny_encoder.tokenizer(TEXTS)
    labels = torch.tensor([i % 3 for i in range(len(TEXTS))])
    grads = {}
    for engine in ("fast", "readable"):
        torch.manual_seed(0)
        model = MultiTaskModel(tiny_encoder, tasks, dropout=0.0, engine=engine)
        for layer in model.encoder.layers[:freeze_to]:
            layer.requires_grad_(False)
        model.eval()  # no dropout anywhere, so both engines compute the same function
        model.zero_grad()
        _, logits = model(**batch)
        F.cross_entropy(logits["topic"], labels).backward()
        grads[engine] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["fast"].keys() == grads["readable"].keys()
    assert len(grads["fast"]) > 10
    for n in grads["fast"]:
        assert_close(grads["fast"][n], grads["readable"][n], 1e-6, f"gradient of {n}, fast vs readable")


def test_fast_training_dropout_is_live(tiny_encoder):
    from minimt.multitask import MultiTaskModel
    model = MultiTaskModel(tiny_encoder, {"topic": ["a", "b"]}).train()
    batch = tiny_encoder.tokenizer(TEXTS)
    a, b = model.embed(**batch), model.embed(**batch)
    assert (a - b).abs().max() > 1e-4, "two training-mode passes gave the same output: dropout is not applied"
    with pytest.raises(ValueError, match="one segment"):
        model.embed(batch["input_ids"], batch["attention_mask"], torch.ones_like(batch["input_ids"]))
