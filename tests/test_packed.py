"""The Packed layout against the padded one: the same BertModel (model.py), fed two ways, gives the same numbers.

Tolerance 1e-6 in float32 (2e-6..1e-5 on the real model's unnormalised vectors): the layouts differ only in which
rows share a matmul, which moves the last bits; the golden tests hold the packed path to the reference too.
"""
import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close
from minimt import SentenceEncoder
from minimt.config import BertConfig
from minimt.model import BertModel, Packed
from minimt.multitask import MultiTaskModel
from minimt.pooling import normalize, pool
from minimt.tokenizer import Tokenizer

TEXTS = ["", "a", "A man is playing a guitar.", "Someone plays the guitar!", "The stock market fell sharply today.",
         "word " * 300, "two words", "Tokens: ünïcödé, emoji 🙂, digits 12345.", "x y", "short one", "short two"]


def padded_vectors(enc, texts, normalized=True):
    """The readable reference: pad every text to the longest, mask the padding, pool over real tokens."""
    batch = enc.tokenizer(texts)
    hidden = enc.model(**batch)                                             # (B, T, H)
    v = pool(hidden, batch["attention_mask"], enc.config.pooling).float()   # (B, H); bf16 normalised in fp32
    return normalize(v) if normalized else v


def test_runs_of_equal_length():
    p = Packed.from_ids([[1] * 5, [2] * 5, [3] * 3, [4] * 3, [5] * 3, [6]])
    assert p.runs == [(2, 5), (3, 3), (1, 1)]
    assert p.input_ids.shape == p.positions.shape == (20,)
    assert p.positions.tolist()[:12] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    with pytest.raises(ValueError, match="longest first"):
        Packed.from_ids([[101, 102], [101, 7, 102]])


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_packed_equals_padded_minilm(own_minilm, pooling, attention):
    own_minilm.config.pooling = pooling
    own_minilm.model.set_attention(attention)
    with torch.no_grad():
        a, b = own_minilm.encode(TEXTS, normalize=False), padded_vectors(own_minilm, TEXTS, normalized=False)
    assert_close(a, b, 1e-5 if pooling == "max" else 2e-6, f"packed vs padded, {pooling} pooling, {attention}")


@pytest.mark.parametrize("max_tokens", [1, 64, 4096])
def test_packed_equals_padded_any_batching(tiny_encoder, max_tokens):
    """A random tiny model (weights far from a trained checkpoint's) with every batch shape from 1 text up."""
    texts = TEXTS * 3
    with torch.no_grad():
        want = padded_vectors(tiny_encoder, texts)
    got = tiny_encoder.encode(texts, max_tokens=max_tokens)
    assert_close(got, want, 1e-6, f"tiny model, packed (max_tokens={max_tokens}) vs padded")


def test_bfloat16_packed_close_to_padded(minilm_dir):
    enc = SentenceEncoder.from_pretrained(minilm_dir, dtype="bfloat16")
    with torch.no_grad():
        b = padded_vectors(enc, TEXTS).float().numpy()
    a = enc.encode(TEXTS)
    assert (a * b).sum(1).min() > 0.999, "bf16 packed and padded embeddings point in different directions"


def test_token_budget_batches():
    ids = [[1] * n for n in (3, 9, 1, 9, 4, 20, 2)]
    batches = list(Tokenizer.token_batches(ids, max_tokens=18))
    assert sorted(i for idx, _ in batches for i in idx) == list(range(len(ids)))   # every text exactly once
    for idx, b in batches:
        assert [len(x) for x in b] == sorted((len(x) for x in b), reverse=True)   # longest first
        assert len(b) == 1 or len(b) * len(b[0]) <= 18                            # padded size within budget
    assert [len(b) for _, b in batches] == [1, 2, 4]  # 20 alone (over budget), 9+9, 4+3+2+1
    assert [len(b) for _, b in Tokenizer.token_batches(ids, max_tokens=None, batch_size=3)] == [3, 3, 1]


def test_padded_forward_without_a_mask_treats_every_token_as_real():
    """BertModel(input_ids) == BertModel(input_ids, all-ones mask); with a mask, padding changes no real token."""
    torch.manual_seed(1)
    model = BertModel(BertConfig.tiny()).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        assert_close(model(ids), model(ids, torch.ones_like(ids)), 0.0, "no mask vs an all-ones mask")
        alone = model(ids[1:, :3])                                           # (1, 3, H): the short text unpadded
        padded = model(ids, mask)                                            # (2, 5, H)
        unmasked = model(ids)                                                # the padding taken for real tokens
    assert_close(padded[1, :3], alone[0], 1e-6, "a padded text's real tokens vs the text alone")
    assert (unmasked[1, :3] - alone[0]).abs().max() > 1e-3, "without the mask, padding must be attended to"


@pytest.mark.parametrize("freeze_to", [0, 1])
def test_training_gradients_packed_equal_padded(tiny_encoder, freeze_to):
    """Dropout off: loss and every gradient through MultiTaskModel.forward (packed) == the padded forward's
    (layers below freeze_to frozen)."""
    tasks = {"topic": ["a", "b", "c"]}
    labels = torch.tensor([i % 3 for i in range(len(TEXTS))])
    ids = tiny_encoder.tokenizer.encode(TEXTS)
    grads = {}
    for layout in ("packed", "padded"):
        torch.manual_seed(0)
        model = MultiTaskModel(tiny_encoder, tasks, dropout=0.0)
        for layer in model.bert.layers[:freeze_to]:
            layer.requires_grad_(False)
        model.eval()  # no dropout anywhere, so both layouts compute the same function
        model.zero_grad()
        vectors = model(ids) if layout == "packed" else padded_vectors(tiny_encoder, TEXTS)
        F.cross_entropy(model.classify(vectors)["topic"], labels).backward()
        grads[layout] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        for layer in model.bert.layers:
            layer.requires_grad_(True)
    assert grads["packed"].keys() == grads["padded"].keys()
    assert len(grads["packed"]) > 10
    for n in grads["packed"]:
        assert_close(grads["packed"][n], grads["padded"][n], 1e-6, f"gradient of {n}, packed vs padded")


def test_training_dropout_is_live_and_order_kept(tiny_encoder):
    model = MultiTaskModel(tiny_encoder, {"topic": ["a", "b"]})
    ids = tiny_encoder.tokenizer.encode(TEXTS)
    model.train()
    a, b = model(ids), model(ids)
    assert (a - b).abs().max() > 1e-4, "two training-mode passes gave the same output: dropout is not applied"
    model.eval()
    with torch.no_grad():
        assert_close(model(ids[::-1]), model(ids).flip(0), 1e-6, "forward keeps the caller's order")


def test_compiled_training_step(tiny_encoder):
    """MultiTaskModel.compile in training mode (one layer frozen): the compiled forward applies dropout, and the
    compiled backward fills every trainable gradient and none of the frozen layer's. (Its gradients' values: the
    tiny BERT golden, compiled, in test_golden.py.)"""
    tasks = {"topic": ["a", "b", "c"]}
    labels = torch.tensor([i % 3 for i in range(len(TEXTS))])
    ids = tiny_encoder.tokenizer.encode(TEXTS)
    model = MultiTaskModel(tiny_encoder, tasks).compile()
    model.bert.layers[0].requires_grad_(False)
    model.train()
    a, b = model(ids), model(ids)
    assert model.compiled.fn is not None, "the compiled path fell back to eager"
    assert (a - b).abs().max() > 1e-4, "two compiled training-mode passes gave the same output: no dropout"
    F.cross_entropy(model.classify(a)["topic"], labels).backward()
    for n, p in model.named_parameters():
        frozen = n.startswith("bert.layers.0.")
        assert (p.grad is None) == frozen, f"{n}: gradient {'present' if p.grad is not None else 'missing'}"
        assert frozen or (torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0), f"{n}: gradient zero or not finite"
