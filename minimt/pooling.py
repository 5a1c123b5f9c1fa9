"""Token vectors -> one sentence vector (sentence-transformers' Pooling and Normalize modules).

Reimers & Gurevych 2019, "Sentence-BERT", section 3: mean pooling over the real tokens works best for
all-MiniLM-L6-v2 and most sentence encoders; CLS and max pooling are the alternatives.
"""
import torch.nn.functional as F


def mean_pool(hidden, attention_mask):
    # hidden: (B, T, H); attention_mask: (B, T), 1 for real tokens; padding must not enter the average
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)   # (B, T, 1)
    summed = (hidden * m).sum(dim=1)                    # (B, H)
    count = m.sum(dim=1).clamp(min=1e-9)                # (B, 1); clamp guards an all-padding row
    return summed / count                               # (B, H)


def cls_pool(hidden, attention_mask):
    return hidden[:, 0]                                 # (B, H): the [CLS] token's vector


def max_pool(hidden, attention_mask):
    m = attention_mask.unsqueeze(-1).bool()             # (B, T, 1)
    return hidden.masked_fill(~m, -1e9).amax(dim=1)     # (B, H); padding can never be the max


POOLERS = {"mean": mean_pool, "cls": cls_pool, "max": max_pool}


def pool(hidden, attention_mask, mode="mean"):
    if mode not in POOLERS:
        raise ValueError(f"pooling {mode!r} is not known; use one of {sorted(POOLERS)}")
    return POOLERS[mode](hidden, attention_mask)


def normalize(x):
    """L2-normalise the last dimension, so a dot product is a cosine similarity."""
    return F.normalize(x, p=2, dim=-1)
