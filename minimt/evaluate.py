"""Evaluating a MultiTaskModel: per classification task loss, accuracy, macro-F1 and confusion matrix, plus one
prediction record per example and task (the lines of predictions.jsonl); per pairs task Spearman and Pearson, per
contrastive task recall@1 and MRR (minimt/objectives.py). And the STS benchmark for any SentenceEncoder.

STS benchmark (Cer et al. 2017): 1,379 test sentence pairs scored 0-5 by people; an encoder is judged by the
Spearman rank correlation between its cosine similarities and those scores (x 100, as papers report it).
"""
import numpy as np
import torch
import torch.nn.functional as F

from minimt.data import IGNORE, collate
from minimt.encoder import SentenceEncoder, eval_mode
from minimt.errors import UserError
from minimt.io import datasets
from minimt.metrics import accuracy, confusion, macro_f1
from minimt.objectives import pair_metrics
from minimt.similarity import pearson, spearman


@torch.no_grad()
def evaluate(model, examples, maps, split, batch_size=64, cache=None, records=True, specs=None):
    """{task: metrics} (each with its "kind") and (records=True) one prediction record per example and
    classification task. specs: the pairs and contrastive tasks to score as well ({task: Source})."""
    with eval_mode(model):
        out, preds = classify_metrics(model, examples, maps, split, batch_size, cache, records)
        encoder = SentenceEncoder(model.bert, model.tokenizer)  # the same BertModel: sorted, packed batches
        for t, spec in (specs or {}).items():
            rows = [ex for ex in examples if ex.pair is not None and ex.pair.task == t]
            if not rows:
                continue  # this split has none of the task's rows (a source with split="train" only)
            u = encoder.encode([ex.text for ex in rows], convert_to_tensor=True)          # (n, H)
            v = encoder.encode([ex.pair.text_b for ex in rows], convert_to_tensor=True)   # (n, H)
            scores = torch.tensor([ex.pair.score or 0.0 for ex in rows])
            out[t] = {"kind": spec.kind, **pair_metrics(spec.kind, u, v, scores)}
    return out, preds


def classify_metrics(model, examples, maps, split, batch_size, cache, records):
    out, preds = {}, []
    labelled = [ex for ex in examples if ex.pair is None]
    y_all, p_all, loss_sum = {t: [] for t in maps}, {t: [] for t in maps}, {t: 0.0 for t in maps}
    for start in range(0, len(labelled), batch_size):
        chunk = labelled[start:start + batch_size]
        batch = collate(chunk, model.tokenizer, maps)
        logits = model.classify(cache(chunk) if cache is not None else model(batch["ids"]))
        for t in maps:
            y, lg = batch["labels"][t].to(logits[t].device), logits[t].float()
            keep = y != IGNORE
            if keep.any():
                loss_sum[t] += F.cross_entropy(lg[keep], y[keep], reduction="sum").item()
                y_all[t] += y[keep].tolist()
                p_all[t] += lg[keep].argmax(-1).tolist()
            if not records:
                continue
            probs = lg.softmax(-1)
            for i, ex in enumerate(chunk):
                preds.append({"split": split, "id": ex.id, "text": ex.text, "task": t, "label": ex.labels.get(t),
                              "pred": maps[t][int(probs[i].argmax())],
                              "probs": {name: round(float(p), 5) for name, p in zip(maps[t], probs[i])}})
    for t, labels in maps.items():
        m = confusion(y_all[t], p_all[t], len(labels))
        out[t] = {"kind": "classify", "n": len(y_all[t]), "loss": loss_sum[t] / max(1, len(y_all[t])),
                  "accuracy": accuracy(m), "macro_f1": macro_f1(m), "confusion": m.tolist()}
    return out, preds


def read_sts(split="test", data_dir=None):
    """(sentences1, sentences2, scores) from stsb/sts-<split>.csv: tab-separated, no quoting, fields 4-6.
    data_dir: the folder holding stsb/ (default: data/, see minimt/io/datasets.py)."""
    path = datasets.path("stsb", f"sts-{split}.csv", data_dir)
    s1, s2, scores = [], [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 7:
                raise UserError(f"{path}:{n}: expected at least 7 tab-separated fields, got {len(cols)}")
            scores.append(float(cols[4]))
            s1.append(cols[5])
            s2.append(cols[6])
    return s1, s2, np.array(scores)


def evaluate_sts(encoder, split="test", batch_size=32, data_dir=None):
    """Pearson and Spearman (x 100) between cosine(embeddings) and the gold scores."""
    s1, s2, gold = read_sts(split, data_dir)
    unique = sorted(set(s1) | set(s2))  # each distinct sentence is encoded once
    emb = encoder.encode(unique, batch_size=batch_size, convert_to_tensor=True).cpu()
    row = {s: i for i, s in enumerate(unique)}
    a, b = emb[[row[s] for s in s1]], emb[[row[s] for s in s2]]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1).numpy()
    return {"pairs": len(gold), "pearson": 100 * pearson(cos, gold), "spearman": 100 * spearman(cos, gold)}
