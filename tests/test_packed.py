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


@pytest.fixture(params=["prepacked", "plain"])
def prepacked(request):
    """Run a test with both weight paths of model.Linear: prepacked for oneDNN, and F.linear."""
    return request.param == "prepacked"


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
def test_packed_equals_padded_minilm(own_minilm, pooling, attention, prepacked):
    own_minilm.config.pooling = pooling
    own_minilm.model.set_attention(attention)
    own_minilm.model.set_prepacked(prepacked)
    with torch.no_grad():
        a, b = own_minilm.encode(TEXTS, normalize=False), padded_vectors(own_minilm, TEXTS, normalized=False)
    assert_close(a, b, 1e-5 if pooling == "max" else 2e-6, f"packed vs padded, {pooling} pooling, {attention}")


@pytest.mark.parametrize("max_tokens", [1, 64, 4096])
def test_packed_equals_padded_any_batching(tiny_encoder, max_tokens, prepacked):
    """A random tiny model (weights far from a trained checkpoint's) with every batch shape from 1 text up."""
    texts = TEXTS * 3
    with torch.no_grad():
        want = padded_vectors(tiny_encoder, texts)
    tiny_encoder.model.set_prepacked(prepacked)
    try:
        got = tiny_encoder.encode(texts, max_tokens=max_tokens)
    finally:
        tiny_encoder.model.set_prepacked(False)
    assert_close(got, want, 1e-6, f"tiny model, packed (max_tokens={max_tokens}, prepacked={prepacked}) vs padded")


def test_bfloat16_packed_close_to_padded(minilm_dir):
    enc = SentenceEncoder.from_pretrained(minilm_dir, dtype="bfloat16")
    with torch.no_grad():
        b = padded_vectors(enc, TEXTS).float().numpy()
    a = enc.encode(TEXTS)
    assert (a * b).sum(1).min() > 0.999, "bf16 packed and padded embeddings point in different directions"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 48), (13, 48), (2, 7, 48), (600, 48)])
def test_prepacked_linear_equals_f_linear(dtype, shape):
    """model.Linear with prepacked weights == F.linear on the same weight: any row count, padded (B, T, H) input,
    both dtypes; it follows the weight when it changes in place, and stays out of autograd."""
    from minimt.model import Linear
    torch.manual_seed(0)
    lin = Linear(48, 96).to(dtype)
    lin.use_prepacked = True
    x = torch.randn(shape, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bf16 outputs keep 8 bits of mantissa: one rounding ~ 4e-3 x 4
    with torch.no_grad():
        assert_close(lin(x).float(), F.linear(x, lin.weight, lin.bias).float(), tol, f"prepacked {dtype} {shape}")
        assert lin.prepacked_key is not None  # the prepacked path ran
        lin.weight.mul_(-2)                   # an in-place update (as an optimizer step): the copy must follow
        assert_close(lin(x).float(), F.linear(x, lin.weight, lin.bias).float(), 2 * tol, "after an in-place update")
    y = lin(x.requires_grad_())               # autograd on: the plain path, which has a backward
    y.sum().backward()
    assert x.grad is not None and lin.weight.grad is not None


def test_token_budget_batches():
    ids = [[1] * n for n in (3, 9, 1, 9, 4, 20, 2)]
    batches = list(Tokenizer.token_batches(ids, max_tokens=18))
    assert sorted(i for idx, _ in batches for i in idx) == list(range(len(ids)))   # every text exactly once
    for idx, b in batches:
        assert [len(x) for x in b] == sorted((len(x) for x in b), reverse=True)   # longest first
        assert len(b) == 1 or len(b) * len(b[0]) <= 18                            # padded size within budget
    assert [len(b) for _, b in batches] == [1, 2, 4]  # 20 alone (over budget), 9+9, 4+3+2+1
    assert [len(b) for _, b in Tokenizer.token_batches(ids, max_tokens=None, batch_size=3)] == [3, 3, 1]


def test_tiny_config_packed_equals_padded():
    """Straight on the modules, no tokenizer: BertModel on Packed + mean == BertModel padded + masked mean."""
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
        packed = Packed.from_ids(ids)
        hp = model(packed)                                                  # (N, H)
    for b, x in enumerate(ids):  # every real token, row by row
        r0 = sum(len(y) for y in ids[:b])
        assert_close(hp[r0:r0 + len(x)], h[b, :len(x)], 1e-6, f"token vectors of text {b}, packed vs padded")


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
