"""The encoder's own invariants, on the made-up tiny preset (random weights, fast)."""
import pytest
import torch

from helpers import assert_close
from minimt.config import BertConfig
from minimt.model import BertModel


def tiny_batch(cfg, B=3, T=11, lengths=(11, 6, 1)):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, cfg.vocab_size, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    return ids * mask, mask


def test_manual_attention_equals_sdpa():
    torch.manual_seed(0)
    cfg = BertConfig.tiny()
    model = BertModel(cfg).eval()
    ids, mask = tiny_batch(cfg)
    with torch.no_grad():
        model.set_attention("manual")
        manual = model(ids, mask)
        model.set_attention("sdpa")
        fused = model(ids, mask)
    for b, n in enumerate(mask.sum(1).tolist()):
        assert_close(fused[b, :n], manual[b, :n], 1e-6, f"SDPA vs manual attention, row {b}")


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
def test_padding_does_not_leak(attention):
    """A text's vectors are the same alone and inside a batch padded to a longer text."""
    torch.manual_seed(0)
    cfg = BertConfig.tiny()
    model = BertModel(cfg).eval()
    model.set_attention(attention)
    ids, mask = tiny_batch(cfg)
    with torch.no_grad():
        batched = model(ids, mask)
        alone = model(ids[1:2, :6], mask[1:2, :6])
    assert_close(batched[1, :6], alone[0], 1e-6, f"row 1 padded vs alone ({attention})")


def test_output_shape_and_dropout():
    torch.manual_seed(0)
    cfg = BertConfig.tiny()
    model = BertModel(cfg)
    ids, mask = tiny_batch(cfg)
    model.train()
    a, b = model(ids, mask), model(ids, mask)
    assert a.shape == (3, 11, cfg.hidden_size)
    assert not torch.equal(a, b), "train mode must apply dropout"
    model.eval()
    assert torch.equal(model(ids, mask), model(ids, mask)), "eval mode must be deterministic"


def test_training_attention_sdpa_flag_equal():
    """In training (dropout on), the SDPA flag must not change the result: SDPA's math path draws its dropout mask
    on the softmax weights as F.dropout does, so the same seed gives the same mask (1e-6: the two scale q @ k at
    different points)."""
    cfg = BertConfig.tiny()
    torch.manual_seed(0)
    model = BertModel(cfg).train()
    ids, mask = tiny_batch(cfg)
    out = {}
    for impl in ("sdpa", "manual"):
        model.set_attention(impl)
        torch.manual_seed(1)
        out[impl] = model(ids, mask)
    assert_close(out["sdpa"], out["manual"], 1e-6, "training forward, sdpa vs manual")


def test_gradients_reach_embeddings():
    torch.manual_seed(0)
    cfg = BertConfig.tiny()
    model = BertModel(cfg)
    ids, mask = tiny_batch(cfg)
    model(ids, mask).sum().backward()
    assert model.embeddings.word.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_too_long_and_bad_attention_raise():
    model = BertModel(BertConfig.tiny())
    T = model.config.max_position_embeddings + 1
    with pytest.raises(ValueError, match="longer than max_position_embeddings"):
        model(torch.ones(1, T, dtype=torch.long), torch.ones(1, T, dtype=torch.long))
    with pytest.raises(ValueError, match="use 'sdpa' or 'manual'"):
        model.set_attention("flash")


def test_bert_base_shapes():
    """bert-base-uncased's numbers build (12 x 768, 12 heads, 110M parameters) without downloading it."""
    cfg = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    n = sum(p.numel() for p in BertModel(cfg).parameters())
    assert n == 109_482_240 - 590_592  # transformers counts 109,482,240 with its pooler (768 x 768 + 768)
