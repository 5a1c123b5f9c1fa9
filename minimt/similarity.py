"""Using embeddings: similarity, semantic search, paraphrase mining, communities, and the STS benchmark.

The search functions have sentence-transformers' names, signatures and results (`from minimt import util` gives
them under ST's module name); each works through the corpus in chunks, so a corpus of millions of rows never
becomes one query x corpus matrix.

STS benchmark (Cer et al. 2017): 1,379 test sentence pairs scored 0-5 by people; an encoder is judged by the
Spearman rank correlation between its cosine similarities and those scores (x 100, as papers report it).
"""
import heapq

import numpy as np
import torch

from minimt.errors import UserError



def _as_2d(x):
    x = torch.as_tensor(x, dtype=torch.float32)
    return x.unsqueeze(0) if x.dim() == 1 else x


def cos_sim(a, b):
    """(N, D) x (M, D) -> (N, M) tensor of cosines; 1-D inputs count as one row. numpy or torch."""
    a, b = _as_2d(a), _as_2d(b)
    if a.shape[-1] != b.shape[-1]:
        raise UserError(f"cos_sim: dimensions differ ({a.shape[-1]} vs {b.shape[-1]})")
    a = torch.nn.functional.normalize(a, p=2, dim=1)
    b = torch.nn.functional.normalize(b, p=2, dim=1)
    return a @ b.T


def dot_score(a, b):
    """(N, D) x (M, D) -> (N, M) tensor of dot products; for vectors that are already normalised, the cosine."""
    a, b = _as_2d(a), _as_2d(b)
    if a.shape[-1] != b.shape[-1]:
        raise UserError(f"dot_score: dimensions differ ({a.shape[-1]} vs {b.shape[-1]})")
    return a @ b.T


SIMILARITY = {"cosine": cos_sim, "dot": dot_score}  # config_sentence_transformers.json's similarity_fn_name


def _top_k(queries, corpus, k, corpus_chunk_size, score_function):
    """Each query's k best corpus rows: (scores (Q, k'), ids (Q, k')), best first, k' = min(k, len(corpus)).
    The corpus is scored a chunk at a time and each chunk's winners merged with the best so far."""
    best_s = best_i = None
    for c0 in range(0, len(corpus), corpus_chunk_size):
        scores = score_function(queries, corpus[c0:c0 + corpus_chunk_size])                # (Q, chunk)
        s, i = scores.topk(min(k, scores.shape[1]), dim=1)                                  # (Q, <=k) each
        if best_s is not None:
            s, i = torch.cat([best_s, s], 1), torch.cat([best_i, i + c0], 1)
            s, pos = s.topk(min(k, s.shape[1]), dim=1)
            i = i.gather(1, pos)
        else:
            i = i + c0
        best_s, best_i = s, i
    return best_s, best_i


def semantic_search(query_embeddings, corpus_embeddings, query_chunk_size=100, corpus_chunk_size=500000, top_k=10,
                    score_function=cos_sim):
    """For each query, the top_k corpus entries: [[{"corpus_id": i, "score": s}, ...], ...], best first."""
    queries, corpus = _as_2d(query_embeddings), _as_2d(corpus_embeddings)
    out = []
    for q0 in range(0, len(queries), query_chunk_size):
        s, i = _top_k(queries[q0:q0 + query_chunk_size], corpus, top_k, corpus_chunk_size, score_function)
        out += [[{"corpus_id": int(c), "score": float(v)} for v, c in zip(vs, cs)]
                for vs, cs in zip(s.tolist(), i.tolist())]
    return out


def paraphrase_mining(model, sentences, show_progress_bar=False, batch_size=32, query_chunk_size=5000,
                      corpus_chunk_size=100000, max_pairs=500000, top_k=100, score_function=cos_sim):
    """The most similar pairs among `sentences`: [[score, i, j], ...] with i < j, best first."""
    embeddings = model.encode(sentences, show_progress_bar=show_progress_bar, batch_size=batch_size,
                              convert_to_tensor=True)
    return paraphrase_mining_embeddings(embeddings, query_chunk_size, corpus_chunk_size, max_pairs, top_k,
                                        score_function)


def paraphrase_mining_embeddings(embeddings, query_chunk_size=5000, corpus_chunk_size=100000, max_pairs=500000,
                                 top_k=100, score_function=cos_sim):
    """Each row's top_k other rows give candidate pairs; the max_pairs best distinct pairs, best first."""
    embeddings = _as_2d(embeddings)
    heap, seen = [], set()  # a min-heap of (score, i, j), at most max_pairs long: the worst kept pair on top
    for q0 in range(0, len(embeddings), query_chunk_size):
        # k + 1: a row is its own best match, and is dropped below
        s, idx = _top_k(embeddings[q0:q0 + query_chunk_size], embeddings, top_k + 1, corpus_chunk_size,
                        score_function)
        for row, (scores, ids) in enumerate(zip(s.tolist(), idx.tolist()), start=q0):
            for score, j in [(v, j) for v, j in zip(scores, ids) if j != row][:top_k]:
                pair = (min(row, j), max(row, j))
                if pair in seen or (len(heap) == max_pairs and score <= heap[0][0]):
                    continue
                seen.add(pair)
                if len(heap) < max_pairs:
                    heapq.heappush(heap, (score, *pair))
                else:
                    seen.discard(heapq.heappushpop(heap, (score, *pair))[1:])
    return [[score, i, j] for score, i, j in sorted(heap, key=lambda t: t[0], reverse=True)]


def community_detection(embeddings, threshold=0.75, min_community_size=10, batch_size=1024,
                        show_progress_bar=False):
    """Groups of rows whose cosine to a central row is >= threshold, at least min_community_size large, largest
    first, no row in two groups; each group starts with its centre, the others by decreasing cosine to it."""
    x = torch.nn.functional.normalize(_as_2d(embeddings), dim=1) if len(embeddings) else None
    if x is None or len(x) < min_community_size:
        return []
    candidates = []  # (centre, members best first) for every row with enough close rows
    for b0 in range(0, len(x), batch_size):
        scores = x[b0:b0 + batch_size] @ x.T                                  # (b, N)
        for r, row in enumerate(scores, start=b0):
            close = (row >= threshold).nonzero().squeeze(1)
            if len(close) >= min_community_size:
                candidates.append((r, close[row[close].argsort(descending=True, stable=True)].tolist()))
    candidates.sort(key=lambda c: len(c[1]), reverse=True)                    # stable: ties keep row order
    used, communities = set(), []
    for centre, members in candidates:
        if centre in used:
            continue
        rest = [m for m in members if m not in used and m != centre]
        if len(rest) + 1 >= min_community_size:
            communities.append([centre] + rest)
            used.update(communities[-1])
    return sorted(communities, key=len, reverse=True)


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
