"""Using embeddings: cosine similarity, semantic search, and the STS benchmark evaluation.

STS benchmark (Cer et al. 2017): 1,379 test sentence pairs scored 0-5 by people; an encoder is judged by the
Spearman rank correlation between its cosine similarities and those scores (x 100, as papers report it).
"""
import numpy as np
import torch

from minimt import datasets


def _as_2d(x):
    x = torch.as_tensor(x, dtype=torch.float32)
    return x.unsqueeze(0) if x.dim() == 1 else x


def cos_sim(a, b):
    """(N, D) x (M, D) -> (N, M) tensor of cosines; 1-D inputs count as one row. numpy or torch."""
    a, b = _as_2d(a), _as_2d(b)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"cos_sim: dimensions differ ({a.shape[-1]} vs {b.shape[-1]})")
    a = torch.nn.functional.normalize(a, p=2, dim=1)
    b = torch.nn.functional.normalize(b, p=2, dim=1)
    return a @ b.T


def semantic_search(query_embeddings, corpus_embeddings, top_k=10):
    """For each query, the top_k corpus entries by cosine: [[{"corpus_id": i, "score": s}, ...], ...]."""
    scores = cos_sim(query_embeddings, corpus_embeddings)                  # (Q, C)
    k = min(top_k, scores.shape[1])
    best, idx = scores.topk(k, dim=1)                                      # (Q, k) each, best first
    return [[{"corpus_id": int(i), "score": float(s)} for s, i in zip(row_s, row_i)]
            for row_s, row_i in zip(best.tolist(), idx.tolist())]


def pearson(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def ranks(x):
    """1-based ranks; tied values share the mean of their ranks (as scipy.stats.rankdata)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=r)
    return sums[inverse] / counts[inverse]


def spearman(x, y):
    return pearson(ranks(x), ranks(y))


def read_sts(split="test", data_dir=None):
    """(sentences1, sentences2, scores) from stsb/sts-<split>.csv: tab-separated, no quoting, fields 4-6.
    data_dir: the folder holding stsb/ (default: data/, see minimt/datasets.py)."""
    path = datasets.path("stsb", f"sts-{split}.csv", data_dir)
    s1, s2, scores = [], [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 7:
                raise ValueError(f"{path}:{n}: expected at least 7 tab-separated fields, got {len(cols)}")
            scores.append(float(cols[4]))
            s1.append(cols[5])
            s2.append(cols[6])
    return s1, s2, np.array(scores)


def evaluate_sts(encoder, split="test", batch_size=32, data_dir=None):
    """Pearson and Spearman (x 100) between cosine(embeddings) and the gold scores."""
    s1, s2, gold = read_sts(split, data_dir)
    unique = sorted(set(s1) | set(s2))  # each distinct sentence is encoded once
    emb = encoder.encode(unique, batch_size=batch_size, convert_to="torch")
    row = {s: i for i, s in enumerate(unique)}
    a, b = emb[[row[s] for s in s1]], emb[[row[s] for s in s2]]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1).numpy()
    return {"pairs": len(gold), "pearson": 100 * pearson(cos, gold), "spearman": 100 * spearman(cos, gold)}
