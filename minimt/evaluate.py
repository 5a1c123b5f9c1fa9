"""Evaluating a MultiTaskModel: per classification task loss, accuracy, macro-F1 and confusion matrix, plus one
prediction record per example and task (the lines of predictions.jsonl); per pairs task Spearman and Pearson, per
contrastive task recall@1 and MRR (minimt/objectives.py)."""
import torch
import torch.nn.functional as F

from minimt.data import IGNORE, collate
from minimt.encoder import SentenceEncoder
from minimt.metrics import accuracy, confusion, macro_f1
from minimt.objectives import pair_metrics


@torch.no_grad()
def evaluate(model, examples, maps, split, batch_size=64, cache=None, records=True, specs=None):
    """{task: metrics} (each with its "kind") and (records=True) one prediction record per example and
    classification task. specs: the pairs and contrastive tasks to score as well ({task: Source})."""
    model.eval()
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

