"""Trace one text through the encoder: every stage from token ids to the nearest words, with numbers to look at.

    text ─► [CLS] tokens [SEP] ─► Embeddings (T, H) ─► Layer × L (T, H) ─► pool (1, H) ─► L2-normalise (1, H)
                                                        └─ attention weights, per layer (1, nh, T, T)

Nothing here recomputes the model: forward hooks on the model's own modules (model.py) record what they output
during the very call encode() makes (encoder.embed_sorted, a Packed batch of one text: T real tokens, no padding,
so the shapes are (T, H), not (1, T, H)). Attention weights exist only on the manual attention path: the fused
SDPA kernel never materialises them, so the trace runs that one forward with attention="manual" (a hook on each
SelfAttention's `probs` sees the softmax), puts the model's own setting back, and reports how far the SDPA path's
pooled vector is from the traced one (float rounding, ~1e-7: tests/test_model.py proves the two paths equal).

    python -m minimt trace "a sentence" [--model NAME_OR_DIR] [--json OUT.json] [--top K]
    trace(encoder, "a sentence") -> a dict of plain numbers (what --json writes); format_trace(that) -> the text
"""
import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from minimt.errors import UserError
from minimt.io import files
from minimt.encoder import SentenceEncoder, check_texts, embed_sorted, eval_mode
from minimt.pooling import normalize as l2_normalize

# the nearest-neighbour vocabulary: common words across topics, so a sentence's vector lands near its subject
WORDS = (
    "dog", "cat", "horse", "bird", "fish", "tree", "flower", "river", "mountain", "ocean",     # nature
    "weather", "rain", "snow", "sun", "summer", "winter",
    "food", "bread", "apple", "pizza", "coffee", "cheese", "dinner", "cook",                  # food
    "football", "tennis", "game", "team", "win", "run",                                       # sport
    "computer", "phone", "software", "internet", "battery", "screen", "data", "robot",        # technology
    "money", "bank", "price", "market", "business", "job",                                    # money and work
    "music", "song", "movie", "book", "art", "paint",                                         # culture
    "doctor", "hospital", "health", "medicine", "sleep",                                      # health
    "school", "teacher", "student", "science", "history", "language",                         # learning
    "car", "train", "airplane", "road", "travel", "city", "house", "home",                    # places and travel
    "family", "friend", "child", "love", "happy", "sad", "angry", "war", "peace", "law", "government",  # people
)
SHARE_BAR = 40  # characters for a share of 1.0 in the printed bar chart


@dataclass
class Observed:
    """What the model's modules output for one text (float32, on the CPU)."""
    ids: list                # T token ids: [CLS] ... [SEP]
    stages: list             # [(name, (T, H) tensor)]: the embeddings' output, then each layer's
    probs: list              # per layer, (nh, T, T) attention weights: row q = how query token q spreads over keys
    pooled: torch.Tensor     # (H,) the sentence vector before normalisation
    pooled_shape: list       # the pooled batch's shape as the model returned it: [1, H]
    probs_shape: list        # one layer's attention weights as the model computed them: [1, nh, T, T]


@contextmanager
def attention_path(bert, impl):
    """Run `bert` in eval mode with attention `impl` ('manual' or 'sdpa'), then put back each layer's own
    setting and the train/eval mode (a model shared with training must come back as it was)."""
    saved = [layer.attn.use_sdpa for layer in bert.layers]
    bert.set_attention(impl)
    try:
        with eval_mode(bert):
            yield
    finally:
        for layer, use_sdpa in zip(bert.layers, saved):
            layer.attn.use_sdpa = use_sdpa


def observe(bert, ids):
    """One forward of one text's token ids through `bert` (the Packed path encode() runs), with forward hooks on
    the embeddings, every layer and every layer's attention weights; the hooks are removed afterwards."""
    outputs, probs = [], []

    def keep(into):
        def hook(module, args, out):
            # a copy: an in-place step later in the forward must not change what was recorded
            into.append(out.detach().float().cpu().clone())
        return hook

    hooks = [bert.embeddings.register_forward_hook(keep(outputs))]
    for layer in bert.layers:
        hooks.append(layer.register_forward_hook(keep(outputs)))
        hooks.append(layer.attn.probs.register_forward_hook(keep(probs)))
    try:
        with attention_path(bert, "manual"), torch.inference_mode():
            pooled = embed_sorted(bert, [ids])                     # (1, H): the very call encode() makes
    finally:
        for h in hooks:
            h.remove()
    names = ["embeddings"] + [f"layer {i}" for i in range(len(bert.layers))]
    return Observed(ids=list(ids), stages=list(zip(names, outputs)), probs=[p[0] for p in probs],  # (nh, T, T)
                    pooled=pooled[0].detach().float().cpu(), pooled_shape=list(pooled.shape),
                    probs_shape=list(probs[0].shape))


def contributions(last, mode):
    """(T, H) final-layer token vectors -> (T, H) each token's contribution c_t to the pooled vector v, such that
    sum_t c_t = v exactly, for each pooling mode of pooling.py:
      mean: c_t = h_t / T          (the average is a sum of T equal-weight parts)
      cls:  c_0 = h_0, others 0    (the sentence vector is the [CLS] token's)
      max:  c_t[d] = h_t[d] where token t holds the maximum of dimension d, else 0"""
    T = last.shape[0]
    if mode == "mean":
        return last / T
    if mode == "cls":
        return torch.cat([last[:1], torch.zeros_like(last[1:])])
    if mode == "max":
        winner = torch.nn.functional.one_hot(last.argmax(dim=0), T).T    # (T, H): 1 where token t is the max
        return last * winner
    raise UserError(f"token shares for pooling {mode!r} are not defined; trace knows mean, cls and max")


def token_shares(last, pooled, mode):
    """(T,) each token's share of the pooled vector v: share_t = (c_t · v) / |v|², the length of c_t's projection
    onto v's direction as a fraction of |v|. Since sum_t c_t = v, the shares sum to (v · v) / |v|² = 1. A share
    above 1/T means the token pulls the sentence vector its way more than an average token; a negative share
    means it points against the sentence's direction (it shortens v). last: (T, H) final-layer token vectors."""
    c = contributions(last, mode)                                   # (T, H), rows sum to pooled
    gap = (c.sum(dim=0) - pooled).abs().max().item()
    if gap > 1e-4 * max(1.0, pooled.abs().max().item()):
        raise RuntimeError(f"the {mode} pooling's token contributions sum to the pooled vector only within "
                           f"{gap:.2g}; pooling.py and trace.contributions disagree, fix the one that changed")
    return (c @ pooled) / (pooled @ pooled)                         # (T,)


def head_stats(p):
    """p: (nh, T, T) one layer's attention weights -> one dict per head. Entropy in nats (natural log) of each
    query's row: 0 when all weight is on one key, ln T when it is spread evenly over all T."""
    ent = -torch.special.xlogy(p, p).sum(dim=-1)                    # (nh, T): 0 * log 0 counts as 0
    received = p.mean(dim=1)                                        # (nh, T): weight each key gets, query-averaged
    return [{"head": h,
             "cls_entropy": ent[h, 0].item(),
             "cls_top": int(p[h, 0].argmax()), "cls_top_weight": p[h, 0].max().item(),
             "mean_entropy": ent[h].mean().item(),
             "mean_top": int(received[h].argmax()), "mean_top_weight": received[h].max().item()}
            for h in range(p.shape[0])]


def trace(encoder, text, top_k=5):
    """Walk `text` through a SentenceEncoder -> a dict of plain numbers (JSON-ready): tokens, each stage's
    shape and norms, attention per head, token shares, the pooled and normalised vectors, the nearest WORDS."""
    check_texts([text])
    if not isinstance(top_k, int) or not 1 <= top_k <= len(WORDS):
        raise UserError(f"top_k (--top) must be an integer from 1 to {len(WORDS)} (the built-in words), "
                        f"got {top_k!r}")
    start = time.perf_counter()
    bert, cfg = encoder.model, encoder.config
    ids = encoder.tokenizer.encode([text])[0]
    seen = observe(bert, ids)
    with attention_path(bert, "sdpa"), torch.inference_mode():
        fused = embed_sorted(bert, [ids])[0].float().cpu()         # (H,) the fused kernel's answer, for comparison
    T = len(ids)
    pooled, normed = seen.pooled, l2_normalize(seen.pooled)        # (H,), (H,)
    words = encoder.encode(list(WORDS), convert_to_tensor=True, normalize_embeddings=True).cpu()  # (W, H)
    cos = words @ normed                                            # (W,) cosines: both sides have length 1
    best = cos.topk(top_k)
    return {
        "text": text,
        "model": {"layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size, "heads": cfg.num_attention_heads,
                  "pooling": cfg.pooling, "normalize": cfg.normalize, "max_seq_length": encoder.max_seq_length},
        "tokens": [{"index": i, "token": encoder.tokenizer.tok.id_to_token(t), "id": t} for i, t in enumerate(ids)],
        "cut": T >= encoder.max_seq_length,                          # as long as allowed: the text may have been cut
        "attention": {"path": "manual", "sdpa_max_abs_diff": (fused - pooled).abs().max().item(),
                      "shape": seen.probs_shape, "entropy_unit": "nats", "max_entropy": math.log(T)},
        "stages": [{"name": name, "shape": list(h.shape), "norm_mean": h.norm(dim=-1).mean().item(),
                    "norm_cls": h[0].norm().item()} for name, h in seen.stages],
        "heads": [head_stats(p) for p in seen.probs],              # [layer][head]
        "shares": token_shares(seen.stages[-1][1], pooled, cfg.pooling).tolist(),
        "pooled": {"shape": seen.pooled_shape, "norm": pooled.norm().item(), "vector": pooled.tolist()},
        "normalized": {"shape": seen.pooled_shape, "norm": normed.norm().item(), "vector": normed.tolist()},
        "neighbours": [{"word": WORDS[i], "cosine": c} for c, i in zip(best.values.tolist(), best.indices.tolist())],
        "n_words": len(WORDS),
        "seconds": time.perf_counter() - start,
    }


def format_trace(t):
    """The dict trace() returns -> the text `python -m minimt trace` prints."""
    m, a, toks = t["model"], t["attention"], t["tokens"]
    T = len(toks)

    def tok(i):
        return f"{i}:{toks[i]['token']}"

    def vec(v):
        return "[" + ", ".join(f"{x:+.4f}" for x in v[:4]) + ", ...]"

    out = [f"trace of {t['text']!r}",
           f"model: {m['layers']} layers, hidden {m['hidden']}, {m['heads']} heads, {m['pooling']} pooling, "
           f"normalize={m['normalize']}",
           "",
           f"tokens: T = {T}, [CLS] and [SEP] included" + (f" (the text reached max_seq_length = "
                                                          f"{m['max_seq_length']} and may have been cut)"
                                                          if t["cut"] else ""),
           "  index  token            id"]
    out += [f"  {x['index']:>5}  {x['token']:<14} {x['id']:>6}" for x in toks]

    out += ["", "stages: shapes as the encoder's Packed forward sees them (T tokens x H, no padding)",
            "        |h| = the L2 norm of a token vector",
            f"  {'stage':<14} {'shape':<12} {'mean |h|':>9} {'|h[CLS]|':>9}"]
    out += [f"  {s['name']:<14} {str(tuple(s['shape'])):<12} {s['norm_mean']:>9.4f} {s['norm_cls']:>9.4f}"
            for s in t["stages"]]
    p, n = t["pooled"], t["normalized"]
    out += [f"  {'pooled':<14} {str(tuple(p['shape'])):<12} {p['norm']:>9.4f}  ({m['pooling']} over the tokens)",
            f"  {'normalized':<14} {str(tuple(n['shape'])):<12} {n['norm']:>9.4f}"]

    out += ["", f"attention: weights {tuple(a['shape'])} per layer, from the manual path (the fused SDPA kernel never "
            f"forms them);", f"           SDPA's pooled vector differs from the traced one by at most "
            f"{a['sdpa_max_abs_diff']:.1e}",
            f"entropy of a query's weights in {a['entropy_unit']}: 0 = all on one token, ln {T} = "
            f"{a['max_entropy']:.3f} = spread evenly over all {T}",
            "top = the token given the most weight, and that weight; averaged: the token that receives the most",
            "      weight on average over all queries",
            f"  {'':<10}   {'from [CLS]':<31}  averaged over the {T} query tokens",
            f"  {'layer':>5} {'head':>4}   {'entropy':>7}  {'top':<15} {'weight':>6}   {'entropy':>7}  "
            f"{'top':<15} {'weight':>6}"]
    for layer, heads in enumerate(t["heads"]):
        for h in heads:
            out.append(f"  {layer:>5} {h['head']:>4}   {h['cls_entropy']:>7.3f}  {tok(h['cls_top']):<15} "
                       f"{h['cls_top_weight']:>6.3f}   {h['mean_entropy']:>7.3f}  {tok(h['mean_top']):<15} "
                       f"{h['mean_top_weight']:>6.3f}")

    out += ["", f"token shares of the pooled vector: (token's part of the {m['pooling']} pooling) . pooled / "
            f"|pooled|^2; they sum to {sum(t['shares']):.4f}"]
    for i, s in enumerate(t["shares"]):
        out.append(f"  {tok(i):<16} {s:+.4f}  {'#' * max(0, round(s * SHARE_BAR))}")

    out += ["", f"sentence vector: |pooled| = {p['norm']:.4f} before normalisation; pooled {vec(p['vector'])}",
            f"  normalized {vec(n['vector'])}",
            f"nearest of {t['n_words']} built-in words (cosine, the words embedded by the same model):"]
    out += [f"  {x['cosine']:+.4f}  {x['word']}" for x in t["neighbours"]]
    out += ["", f"traced in {t['seconds']:.3f} s" + (f" (model loaded in {t['load_seconds']:.2f} s)"
                                                       if "load_seconds" in t else "")]
    return "\n".join(out)


def trace_command(text, model="all-MiniLM-L6-v2", json_path=None, top_k=5):
    """python -m minimt trace: load, trace, print; with json_path, also write the dict there (whole or not at all)."""
    if json_path:
        files.check_target(json_path, "--json")  # a bad target fails before the trace, not after it is printed
    start = time.perf_counter()
    encoder = SentenceEncoder.from_pretrained(model)
    loaded = time.perf_counter() - start
    result = trace(encoder, text, top_k)
    result["load_seconds"] = loaded
    print(format_trace(result))
    if json_path:
        files.write_text(json_path, json.dumps(result, indent=1, ensure_ascii=False) + "\n", option="--json")
        print(f"wrote {json_path}")
    return 0
