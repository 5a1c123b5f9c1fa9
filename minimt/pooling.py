"""Token vectors -> one sentence vector (sentence-transformers' Pooling and Normalize modules).

Reimers & Gurevych 2019, "Sentence-BERT", section 3: mean pooling over the real tokens works best for
all-MiniLM-L6-v2 and most sentence encoders; CLS and max pooling are the alternatives.
Each pooler takes hidden (B, T, H) and attention_mask (B, T), 1 for real tokens; None when every token is real,
as in each run of a Packed batch (pool_packed).
"""
import torch
import torch.nn.functional as F

from minimt.errors import UserError


def mean_pool(hidden, attention_mask):
    if attention_mask is None:
        return hidden.mean(dim=1)                       # (B, H)
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)   # (B, T, 1); padding must not enter the average
    summed = (hidden * m).sum(dim=1)                    # (B, H)
    count = m.sum(dim=1).clamp(min=1e-9)                # (B, 1); clamp guards an all-padding row
    return summed / count                               # (B, H)


def cls_pool(hidden, attention_mask):
    return hidden[:, 0]                                 # (B, H): the [CLS] token's vector


def max_pool(hidden, attention_mask):
    if attention_mask is not None:
        m = attention_mask.unsqueeze(-1).bool()         # (B, T, 1)
        hidden = hidden.masked_fill(~m, -1e9)           # padding can never be the max
    return hidden.amax(dim=1)                           # (B, H)


POOLERS = {"mean": mean_pool, "cls": cls_pool, "max": max_pool}


def pool(hidden, attention_mask, mode="mean"):
    """Padded: hidden (B, T, H), attention_mask (B, T) -> (B, H)."""
    if mode not in POOLERS:
        raise UserError(f"pooling {mode!r} is not known; use one of {sorted(POOLERS)}")
    return POOLERS[mode](hidden, attention_mask)


def pool_packed(hidden, packed, mode="mean"):
    """Packed: hidden (N, H) -> (B, H), one row per text in the batch's order; a run's (b, T, H) view has no
    padding, so no mask. The runs come from one split (not a slice each, whose backward fills a batch-sized zero
    tensor per run: model.SelfAttention does the same)."""
    rows = hidden.split([b * T for b, T in packed.runs])                             # (b*T, H) per run
    return torch.cat([pool(run.view(b, T, -1), None, mode)                         # (b, H) per run
                      for (b, T), run in zip(packed.runs, rows)])


def normalize(x):
    """L2-normalise the last dimension, so a dot product is a cosine similarity."""
    return F.normalize(x, p=2, dim=-1)
