"""Trace one text through the encoder: every stage from token ids to the nearest words, with numbers to look at.

    text ─► [CLS] tokens [SEP] ─► Embeddings (T, H) ─► Layer × L (T, H) ─► pool (1, H) ─► L2-normalise (1, H)
                                                        └─ attention weights, per layer (1, nh, T, T)

Nothing here recomputes the model: forward hooks on the model's own modules (model.py) record what they output
during the very call encode() makes (encoder.embed_sorted, a Packed batch of one text: T real tokens, no padding,
so the shapes are (T, H), not (1, T, H)). Attention weights exist only on the manual attention path: the fused
SDPA kernel never materialises them, so the trace runs that one forward with attention="manual" (a hook on each
SelfAttention's `probs` sees the softmax), puts the model's own setting back, and reports how far the SDPA path's
pooled vector is from the traced one (float rounding, ~1e-7: tests/test_model.py proves the two paths equal).

Two more views build on the same hooks. pair() explains the cosine of two sentences token by token: the pooled
vector is a sum of token parts (contributions), so the cosine is a sum over token pairs. compare() puts the same
sentence through two models (a pretrained one and its fine-tuned checkpoint) and ranks the heads by how far their
attention moved. page.py draws all of it as one HTML page that embeds this very dict.

    python -m minimt trace "a sentence" [--model NAME_OR_DIR] [--json OUT.json] [--html PAGE.html] [--top K]
                                        [--pair "another sentence"] [--compare MODEL_B]
    trace(encoder, "a sentence") -> a dict of plain numbers (what --json writes); format_trace(that) -> the text
"""
import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from minimt.errors import UserError
from minimt.io import download, files, layout
from minimt.encoder import SentenceEncoder, check_texts, embed_sorted, eval_mode
from minimt.multitask import MultiTaskModel
from minimt.pooling import normalize as l2_normalize
from minimt.pooling import pool
from minimt.tools import page

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
WEIGHT_DIGITS = 6  # attention weights are kept to 1e-6: far below what a picture shows, and T*T*heads*layers numbers
CHANGE = "mean over query tokens of the Jensen-Shannon divergence between the two models' attention rows"
SHOWN = 8  # token pairs and heads listed in the printed pair and compare sections


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


def stage_rows(stages, pooled, mode):
    """Per stage: its shape, each token's norm, and how close the stage's own pooled vector already is to the final
    one (cosine; the last layer's is 1, since it is the final one)."""
    rows = []
    for name, h in stages:                                          # h: (T, H)
        here = pool(h[None], None, mode)[0]                         # (H,) this stage pooled as the model pools
        rows.append({"name": name, "shape": list(h.shape), "norm_mean": h.norm(dim=-1).mean().item(),
                     "norm_cls": h[0].norm().item(), "norms": h.norm(dim=-1).tolist(),
                     "cos_to_final": torch.nn.functional.cosine_similarity(here, pooled, dim=0).item()})
    return rows


def rounded_weights(probs):
    """[(nh, T, T)] per layer -> nested lists [layer][head][query][key], to WEIGHT_DIGITS decimals (in float64,
    so each number prints as its short decimal)."""
    scale = 10.0 ** WEIGHT_DIGITS
    return [((p.double() * scale).round() / scale).tolist() for p in probs]


def predictions(multitask, vector):
    """A MultiTaskModel's heads on the traced sentence vector (H,) -> {task: the label, its probability, and every
    label's probability}: what multitask.predict() gives for the text, with the whole distribution."""
    with eval_mode(multitask), torch.inference_mode():
        logits = multitask.classify(vector[None].to(multitask.device))  # {task: (1, C)}
    out = {}
    for task, lg in logits.items():
        p = lg[0].float().softmax(-1).cpu()                         # (C,)
        labels = multitask.tasks[task]
        out[task] = {"label": labels[int(p.argmax())], "probability": p.max().item(), "labels": labels,
                     "probabilities": p.tolist()}
    return out


def token_list(encoder, ids):
    return [{"index": i, "token": encoder.tokenizer.tok.id_to_token(t), "id": t} for i, t in enumerate(ids)]


def trace(encoder, text, top_k=5, multitask=None):
    """Walk `text` through a SentenceEncoder -> a dict of plain numbers (JSON-ready): tokens, each stage's
    shape and norms, attention per head (its weights too), token shares, the pooled and normalised vectors, the
    nearest WORDS; with `multitask` (the MultiTaskModel around the same BertModel), each task head's prediction."""
    check_texts([text])
    if not isinstance(top_k, int) or not 1 <= top_k <= len(WORDS):
        raise UserError(f"top_k (--top) must be an integer from 1 to {len(WORDS)} (the built-in words), "
                        f"got {top_k!r}")
    if multitask is not None and multitask.bert is not encoder.model:
        raise UserError("trace(multitask=...) takes the MultiTaskModel built around this encoder's own BertModel")
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
    t = {
        "text": text,
        "model": {"layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size, "heads": cfg.num_attention_heads,
                  "pooling": cfg.pooling, "normalize": cfg.normalize, "max_seq_length": encoder.max_seq_length},
        "tokens": token_list(encoder, ids),
        "cut": T >= encoder.max_seq_length,                          # as long as allowed: the text may have been cut
        "attention": {"path": "manual", "sdpa_max_abs_diff": (fused - pooled).abs().max().item(),
                      "shape": seen.probs_shape, "entropy_unit": "nats", "max_entropy": math.log(T),
                      "weights": rounded_weights(seen.probs), "weight_digits": WEIGHT_DIGITS},
        "stages": stage_rows(seen.stages, pooled, cfg.pooling),
        "heads": [head_stats(p) for p in seen.probs],              # [layer][head]
        "shares": token_shares(seen.stages[-1][1], pooled, cfg.pooling).tolist(),
        "pooled": {"shape": seen.pooled_shape, "norm": pooled.norm().item(), "vector": pooled.tolist()},
        "normalized": {"shape": seen.pooled_shape, "norm": normed.norm().item(), "vector": normed.tolist()},
        "neighbours": [{"word": WORDS[i], "cosine": c} for c, i in zip(best.values.tolist(), best.indices.tolist())],
        "n_words": len(WORDS),
    }
    if multitask is not None:  # its heads read what forward() returns: the normalised vector if it normalises
        t["predictions"] = predictions(multitask, normed if cfg.normalize else pooled)
    t["seconds"] = time.perf_counter() - start
    return t


def pair(encoder, text_a, text_b):
    """Why two sentences score the cosine they do, token by token. Each pooled vector is a sum of token parts,
    v_a = sum_i c_i and v_b = sum_j d_j (contributions(); for mean pooling c_i = h_i / T_a), so

        cos(v_a, v_b) = (v_a . v_b) / (|v_a| |v_b|) = sum_i sum_j (c_i . d_j) / (|v_a| |v_b|)

    and part[i][j] = (c_i . d_j) / (|v_a| |v_b|) is token pair (i, j)'s share of the cosine: the parts sum to it
    exactly. token_cosine[i][j] = cos(h_i, h_j) says which words match, whatever their weight in the sentence."""
    check_texts([text_a, text_b])
    mode, sides = encoder.config.pooling, []
    for text in (text_a, text_b):
        ids = encoder.tokenizer.encode([text])[0]
        seen = observe(encoder.model, ids)
        sides.append((ids, seen.stages[-1][1].double()))   # (T, H) final token vectors, float64: sums exact
    (_, last_a), (ids_b, last_b) = sides
    ca, cb = contributions(last_a, mode), contributions(last_b, mode)  # (Ta, H), (Tb, H)
    va, vb = ca.sum(dim=0), cb.sum(dim=0)                              # the pooled vectors, from those very parts
    part = ca @ cb.T / (va.norm() * vb.norm())                         # (Ta, Tb)
    return {"text": text_b, "tokens": token_list(encoder, ids_b), "pooling": mode,
            "cosine": (va @ vb / (va.norm() * vb.norm())).item(),
            "part": part.tolist(), "part_a": part.sum(dim=1).tolist(), "part_b": part.sum(dim=0).tolist(),
            "token_cosine": (l2_normalize(last_a) @ l2_normalize(last_b).T).tolist()}


def js_divergence(p, q):
    """Jensen-Shannon divergence of distributions along the last dimension, in nats: 0 when p = q exactly,
    ln 2 when they share no token. Symmetric, and finite where a weight is 0 (unlike KL)."""
    m = (p + q) / 2
    xlogy = torch.special.xlogy                                     # x log y, with 0 log 0 = 0
    return ((xlogy(p, p) - xlogy(p, m)).sum(dim=-1) + (xlogy(q, q) - xlogy(q, m)).sum(dim=-1)) / 2


def compare(a, b):
    """Two traces of the same text by two models (a pretrained model and its fine-tuned checkpoint) -> how much
    each head's attention changed: CHANGE, in nats (0 = the same weights, ln 2 = no key in common), computed
    from the weights both dicts hold. A layer whose input and weights did not change (frozen, with everything
    below it frozen too) gives exactly 0. b, the second model's whole trace, is kept in the result."""
    if [x["id"] for x in a["tokens"]] != [x["id"] for x in b["tokens"]]:
        raise UserError("the two models tokenize the text differently (their vocabularies or max_seq_length "
                        "differ), so their attention cannot be compared token by token; --compare needs a model "
                        "and one fine-tuned from it")
    if a["attention"]["shape"] != b["attention"]["shape"] or len(a["heads"]) != len(b["heads"]):
        raise UserError(f"the two models differ in shape ({len(a['heads'])} vs {len(b['heads'])} layers, attention "
                        f"{a['attention']['shape']} vs {b['attention']['shape']}); --compare needs the same "
                        f"architecture")
    pa, pb = (torch.tensor(t["attention"]["weights"], dtype=torch.float64) for t in (a, b))  # (L, nh, T, T)
    change = js_divergence(pa, pb).mean(dim=-1)                                               # (L, nh)
    order = sorted(((layer, head) for layer in range(change.shape[0]) for head in range(change.shape[1])),
                   key=lambda lh: -change[lh].item())
    return {"measure": CHANGE, "unit": "nats", "max": math.log(2), "change": change.tolist(),
            "by_layer": change.mean(dim=1).tolist(),
            "ranked": [{"layer": lh[0], "head": lh[1], "change": change[lh].item()} for lh in order],
            "trace": b}


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
    out += format_predictions(t) + format_pair(t) + format_compare(t)
    out += ["", f"traced in {t['seconds']:.3f} s" + (f" (model loaded in {t['load_seconds']:.2f} s)"
                                                       if "load_seconds" in t else "")]
    return "\n".join(out)


def format_predictions(t):
    if "predictions" not in t:
        return []
    return ["", f"{t['model'].get('name', 'the checkpoint')}'s heads on its sentence vector (label, probability):"] + [
        f"  {task:<14} {p['label']:<16} {p['probability']:.3f}" for task, p in t["predictions"].items()]


def format_pair(t):
    if "pair" not in t:
        return []
    p, a, b = t["pair"], t["tokens"], t["pair"]["tokens"]
    pairs = sorted(((i, j) for i in range(len(a)) for j in range(len(b))),
                   key=lambda ij: -abs(p["part"][ij[0]][ij[1]]))           # the largest parts, either sign
    out = ["", f"pair: cos({t['text']!r}, {p['text']!r}) = {p['cosine']:.4f}",
           f"  the {p['pooling']} pooling makes each vector a sum of token parts, so the cosine is a sum over token "
           f"pairs (c_i . d_j) / (|a| |b|);", f"  they sum to {sum(map(sum, p['part'])):.4f}. The {SHOWN} largest, "
           f"with the cosine of the two token vectors:"]
    out += [f"    {i}:{a[i]['token']} ~ {j}:{b[j]['token']}   part {p['part'][i][j]:+.4f}   token cosine "
            f"{p['token_cosine'][i][j]:+.3f}" for i, j in pairs[:SHOWN]]
    return out


def format_compare(t):
    if "compare" not in t:
        return []
    c, name = t["compare"], t["compare"]["trace"]["model"].get("name", "the second model")
    out = ["", f"compare with {name}: change of a head = {c['measure']}",
           f"  in {c['unit']}: 0 = the same weights, ln 2 = {c['max']:.3f} = no key in common",
           "  per layer (mean over heads): " + "  ".join(f"{i}: {x:.4f}" for i, x in enumerate(c["by_layer"])),
           f"  the {SHOWN} heads that changed most:"]
    out += [f"    layer {r['layer']} head {r['head']}: {r['change']:.4f}" for r in c["ranked"][:SHOWN]]
    b = c["trace"]
    out += [f"  {name}'s nearest words: " + ", ".join(f"{x['word']} {x['cosine']:.2f}" for x in b["neighbours"])]
    return out + format_predictions(b)


def load(model):
    """A model name or directory -> (SentenceEncoder, its MultiTaskModel if the directory has task heads, else
    None). The MultiTaskModel wraps the encoder's own BertModel, so the trace and the heads see the same weights."""
    path = download.locate(model)
    if layout.has_heads(path):
        multitask = MultiTaskModel.from_checkpoint(path)
        return SentenceEncoder(multitask.bert, multitask.tokenizer), multitask
    return SentenceEncoder.from_pretrained(path), None


def trace_command(text, model="all-MiniLM-L6-v2", json_path=None, top_k=5, html_path=None, pair_text=None,
                  compare_model=None):
    """python -m minimt trace: load, trace, print; with json_path / html_path, also write the dict there as JSON /
    as a page that embeds it (each whole or not at all). pair_text adds the pair section, compare_model the
    same text through a second model."""
    targets = {path: option for path, option in ((json_path, "--json"), (html_path, "--html")) if path}
    if json_path and html_path and Path(json_path).resolve() == Path(html_path).resolve():
        raise UserError(f"--json and --html both name {json_path}; give each its own file")
    for path, option in targets.items():
        files.check_target(path, option)  # a bad target fails before the trace, not after it is printed
    check_texts([text] + ([] if pair_text is None else [pair_text]))
    start = time.perf_counter()
    encoder, multitask = load(model)
    loaded = time.perf_counter() - start
    second = None if compare_model is None else load(compare_model)  # a bad MODEL_B fails before any trace
    result = trace(encoder, text, top_k, multitask)
    result["model"]["name"] = model
    if pair_text is not None:
        result["pair"] = pair(encoder, text, pair_text)
    if second is not None:
        other = trace(second[0], text, top_k, second[1])
        other["model"]["name"] = compare_model
        result["compare"] = compare(result, other)
    result["load_seconds"] = loaded
    print(format_trace(result))
    outputs = {json_path: json.dumps(result, indent=1, ensure_ascii=False) + "\n"} if json_path else {}
    if html_path:
        outputs[html_path] = page.render(result)
    for path, text_out in outputs.items():
        files.write_text(path, text_out, option=targets[path])
        print(f"wrote {path}")
    return 0
