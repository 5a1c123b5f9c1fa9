"""The fast engine: the BERT of model.py computed with less work, tested equal to it (tests/test_fast.py).

model.py is the readable version; this file is what SentenceEncoder.encode and training run by default. It holds
no weights of its own, and computes the same function. What it does differently, and why:

1. No padding. A batch's texts are packed into one (N, H) matrix of their real tokens, N = the sum of their lengths.
   The dense layers (Q/K/V, output, FFN: about three quarters of the time) do no work on padding at all.
2. Attention per run of equal length. The texts arrive sorted by length, so texts of equal length are neighbours in
   the packed matrix: a run of b texts of T tokens is a (b, T, 3H) view of the QKV output. Attention runs on that view
   with no mask (nothing to mask), which lets SDPA take its fastest kernel. This is "variable-length attention" without
   a special kernel: a sorted corpus has only a few dozen distinct lengths, so the Python loop over runs is short.
3. One QKV matmul for big batches: (N, H) @ (H, 3H) instead of three (N, H) @ (H, H); one larger GEMM, one pass
   over x. For a few tokens (one sentence) three separate matmuls are faster than stacking the weights first.
4. Fewer temporaries: the output projection and FFN-down matmuls start from the residual (addmm's `input`), the bias
   is added in place, GELU runs in place, so each layer allocates about half the (N, H)-sized buffers.
5. Pooling without masks: mean/CLS/max over a run is a plain reduction of its (b, T, H) view.

What stays the same: every weight, every LayerNorm, the exact erf GELU, fp32 accumulation in the matmuls. The results
differ from the padded path only by float rounding order (~1e-7), far inside the 1e-5 held against
sentence-transformers. It also trains (MultiTaskModel's default): with autograd on it applies dropout where
model.py does, and the padded tokens it skips are ~1/4 of a batch of reviews.
"""
import torch
import torch.nn.functional as F

from minimt.model import BertModel
from minimt.pooling import POOLERS


ENGINES = ("fast", "readable")  # this file, or model.py's padded forward
FUSED_QKV_MIN_TOKENS = 2048  # measured: one stacked QKV matmul wins from ~2k tokens, three separate ones below


def runs(lengths):
    """Sorted lengths -> [(first_row, n_texts, T)]: each run of equal-length texts and where its rows start."""
    out, row, i = [], 0, 0
    while i < len(lengths):
        T, j = lengths[i], i
        while j < len(lengths) and lengths[j] == T:
            j += 1
        out.append((row, j - i, T))
        row += (j - i) * T
        i = j
    return out


class FastBert:
    """Wraps a BertModel (sharing its tensors) and runs it on packed, unpadded batches."""

    def __init__(self, model: BertModel):
        self.model = model

    def __call__(self, ids, pooling="mean"):
        """Inference: no autograd, no dropout bookkeeping."""
        with torch.inference_mode():
            return self.forward(ids, pooling)

    def forward(self, ids, pooling="mean"):
        """ids: token-id lists sorted longest first -> pooled (B, H) sentence vectors, in the same order.
        Differentiable; dropout applies in each module that is in training mode, as in model.py."""
        lengths = [len(x) for x in ids]
        if any(a < b for a, b in zip(lengths, lengths[1:])):
            raise ValueError("FastBert needs its texts sorted longest first (Tokenizer.token_batches does that)")
        if pooling not in POOLERS:
            raise ValueError(f"pooling {pooling!r} is not known; use one of {sorted(POOLERS)}")
        m, cfg = self.model, self.model.config
        if lengths[0] > cfg.max_position_embeddings:
            raise ValueError(f"sequence of {lengths[0]} tokens is longer than max_position_embeddings "
                             f"{cfg.max_position_embeddings}; truncate the input")
        groups = runs(lengths)
        flat = torch.tensor([t for x in ids for t in x])                            # (N,)
        pos = torch.cat([torch.arange(T).repeat(b) for _, b, T in groups])           # (N,) 0..T-1 per text

        e = m.embeddings
        x = F.embedding(flat, e.word.weight)                                         # (N, H)
        x += F.embedding(pos, e.position.weight)
        if e.token_type is not None:
            x += e.token_type.weight[0]                                              # one segment: type 0
        x = F.layer_norm(x, x.shape[-1:], e.ln.weight, e.ln.bias, e.ln.eps)
        x = F.dropout(x, e.drop.p, e.training)
        for layer in m.layers:
            x = self.layer(layer, x, groups)
        return pool_runs(x, groups, pooling)                                         # (B, H)

    @staticmethod
    def layer(layer, x, groups):
        a, f = layer.attn, layer.ffn
        N, H = x.shape
        nh, hd = a.n_head, a.head_dim
        p_att, p_out = (a.p_drop, layer.drop.p) if layer.training else (0.0, 0.0)
        if N >= FUSED_QKV_MIN_TOKENS:
            # Q, K and V stacked into one (3H, H) matrix, afresh each call: a copy kept across calls would go stale
            # when the weights change (training; fused AdamW even updates them without bumping tensor._version).
            # Autograd carries the gradient back to each of the three.
            w_qkv = torch.cat([a.query.weight, a.key.weight, a.value.weight])       # (3H, H)
            b_qkv = torch.cat([a.query.bias, a.key.bias, a.value.bias])             # (3H,)
            q, k, v = F.linear(x, w_qkv, b_qkv).split(H, dim=1)                      # 3 x (N, H) views of (N, 3H)
        else:  # few tokens: the stacking copy (~1.8 MB per layer for MiniLM) would cost more than it saves
            q, k, v = (F.linear(x, p.weight, p.bias) for p in (a.query, a.key, a.value))  # 3 x (N, H)
        y = q.new_empty(N, H)                                                        # (N, H)
        for r0, b, T in groups:
            rows = slice(r0, r0 + b * T)
            qh, kh, vh = (t[rows].view(b, T, nh, hd).transpose(1, 2) for t in (q, k, v))  # (b, nh, T, hd) each
            o = F.scaled_dot_product_attention(qh, kh, vh, dropout_p=p_att)          # (b, nh, T, hd)
            y[rows].view(b, T, nh, hd).copy_(o.transpose(1, 2))                      # (b, T, nh, hd) into (N, H)
        x = F.layer_norm(residual(x, y, a.out, p_out), (H,), layer.ln1.weight, layer.ln1.bias, layer.ln1.eps)
        u = F.linear(x, f.up.weight, f.up.bias)                                      # (N, 4H)
        # exact erf GELU; in place when no backward will need u
        u = F.gelu(u) if torch.is_grad_enabled() else torch.ops.aten.gelu_(u)
        return F.layer_norm(residual(x, u, f.down, p_out), (H,), layer.ln2.weight, layer.ln2.bias, layer.ln2.eps)


def residual(x, y, linear, p):
    """x + dropout(linear(y)), (N, H). Without dropout the residual rides in the matmul: addmm starts from x."""
    if p == 0.0:
        return torch.addmm(x, y, linear.weight.t()).add_(linear.bias)
    return x + F.dropout(F.linear(y, linear.weight, linear.bias), p)


def pool_runs(x, groups, mode):
    """Packed token vectors (N, H) -> one vector per text (B, H); a run's view has no padding to mask."""
    out = []
    for r0, b, T in groups:
        h = x[r0:r0 + b * T].view(b, T, -1)                                          # (b, T, H)
        out.append(h.mean(1) if mode == "mean" else h[:, 0] if mode == "cls" else h.amax(1))
    return torch.cat(out)                                                            # (B, H)
