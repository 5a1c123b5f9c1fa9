"""Tasks that shape the embedding itself, beside the classification heads: their losses and their metrics.

    kind          a row holds                          loss (on the pooled sentence vectors, no head)
    classify      text, a label per task               cross-entropy of that task's head (train.task_loss)
    pairs         text, text_b, a similarity score     CoSENT (default) or MSE between cos(u, v) and score
    contrastive   anchor, positive [, hard negatives]  in-batch negatives: cross-entropy over cos * scale, every
                                                       other positive and negative in the batch a wrong answer

A classification head can reach a good accuracy while the encoder under it forgets general similarity (the freeze
study shows STSb falling from 82 to 66). Pairs and contrastive rows train the cosine itself, the thing a sentence
encoder is used for; mixed into the same loop they pull the encoder back toward a useful geometry. These are the
objectives of sentence-transformers' CoSENTLoss, CosineSimilarityLoss and MultipleNegativesRankingLoss.
"""
import torch
import torch.nn.functional as F

from minimt.errors import UserError
from minimt.similarity import cos_sim, pearson, spearman

KINDS = ("classify", "pairs", "contrastive")
LOSSES = {"pairs": ("cosent", "mse"), "contrastive": ("in_batch",)}  # the first is each kind's default


def cosent_loss(cos, scores, scale=20.0):
    """CoSENT (Su 2022): log(1 + Σ over pairs (i, j) with score_i > score_j of exp(scale * (cos_j - cos_i))).
    Only the order of the scores matters, so any scale of scores (0-5, 0-1) trains the same; a batch whose scores
    are all equal has nothing to order and gives 0."""
    s = cos * scale
    diff = s[None, :] - s[:, None]                       # (n, n): diff[i, j] = s_j - s_i
    wrong_way = diff[scores[:, None] > scores[None, :]]  # the pairs that should have s_i > s_j
    return torch.logsumexp(torch.cat([wrong_way.new_zeros(1), wrong_way]), 0)


def cosine_mse_loss(cos, targets):
    """Mean squared error between cos(u, v) and the target similarity (the score divided by score_scale)."""
    return F.mse_loss(cos, targets)


def in_batch_negatives_loss(anchors, positives, negatives=None, scale=20.0):
    """Each anchor must pick its own positive among all the batch's positives and hard negatives: (B, H) anchors,
    (B, H) positives, (M, H) negatives -> cross-entropy over (B, B + M) scaled cosines, target the diagonal.
    scale is 1 / temperature (20 = 0.05, sentence-transformers' default)."""
    candidates = positives if negatives is None or len(negatives) == 0 else torch.cat([positives, negatives])
    logits = cos_sim(anchors, candidates) * scale        # (B, B + M)
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device))


def pair_loss(kind, loss, u, v, scores, negatives=None, scale=20.0, score_scale=1.0):
    """The loss of one pairs or contrastive task on its rows: u, v (n, H) the two texts' vectors (anchor and
    positive), scores (n,) for pairs, negatives (m, H) for contrastive. Computed in float32 under autocast."""
    u, v = u.float(), v.float()
    if kind == "pairs":
        cos = F.cosine_similarity(u, v, dim=-1)          # (n,)
        return cosent_loss(cos, scores, scale) if loss == "cosent" else cosine_mse_loss(cos, scores / score_scale)
    if kind == "contrastive":
        return in_batch_negatives_loss(u, v, None if negatives is None else negatives.float(), scale)
    raise UserError(f"pair_loss: kind {kind!r} is not a pairs or contrastive task")


@torch.no_grad()
def pair_metrics(kind, u, v, scores):
    """pairs: Spearman and Pearson (x100) of cos(u, v) against the scores; contrastive: recall@1 and MRR of each
    anchor (u) retrieving its own positive (v) from the corpus of every positive of the split."""
    u, v = u.float(), v.float()
    if kind == "pairs":
        cos = F.cosine_similarity(u, v, dim=-1).cpu().tolist()
        gold = scores.cpu().tolist()
        return {"n": len(gold), "spearman": 100 * spearman(cos, gold), "pearson": 100 * pearson(cos, gold)}
    sims = cos_sim(u, v)                                                 # (n, n): anchor i vs positive j
    rank = (sims > sims.diagonal()[:, None]).sum(1) + 1                  # (n,): 1 = its own positive came first
    return {"n": len(u), "recall_at_1": (rank == 1).float().mean().item(), "mrr": (1.0 / rank).mean().item()}


def pair_tasks(sources):
    """{task: the Source that defines it} for the pairs and contrastive tasks among `sources` (minimt.data.Source);
    several files may feed one task if they agree on its kind, loss and scales."""
    specs = {}
    for src in sources:
        if src.kind == "classify":
            continue
        first = specs.setdefault(src.task, src)
        if (first.kind, first.loss, first.scale, first.score_scale) != (src.kind, src.loss, src.scale,
                                                                        src.score_scale):
            raise UserError(f"task {src.task!r} is defined twice with different kind/loss/scale ({first.path} and "
                            f"{src.path}); give both sources the same settings")
    return specs


def pair_losses(vectors, starts, examples, specs, task, weights):
    """Σ over the pairs and contrastive tasks of the batch (or only `task`) of weight * loss. vectors: (n, H) every
    text of the batch, examples[k]'s texts (Example.texts) starting at row starts[k]."""
    total = 0.0
    for name, spec in specs.items():
        rows = [k for k, ex in enumerate(examples) if ex.pair is not None and ex.pair.task == name]
        if (task and name != task) or not rows:
            continue
        u = vectors[[starts[k] for k in rows]]                                               # (r, H)
        v = vectors[[starts[k] + 1 for k in rows]]                                           # (r, H)
        negatives = vectors[[starts[k] + 2 + j for k in rows for j in range(len(examples[k].pair.negatives))]]
        scores = torch.tensor([examples[k].pair.score or 0.0 for k in rows], device=vectors.device)
        loss = pair_loss(spec.kind, spec.loss, u, v, scores, negatives, spec.scale, spec.score_scale)
        total = total + weights.get(name, 1.0) * loss
    return total


def primary(kind, metrics):
    """The one number per task that picks the best checkpoint (mean over tasks), each in [0, 1] or near it."""
    return {"classify": metrics.get("macro_f1"), "pairs": metrics.get("spearman", 0) / 100,
            "contrastive": metrics.get("mrr")}[kind]


def summary(metrics):
    """A task's metrics as one short line, whatever its kind."""
    if "accuracy" in metrics:
        return f"acc {metrics['accuracy']:.3f} F1 {metrics['macro_f1']:.3f}"
    if "spearman" in metrics:
        return f"Spearman {metrics['spearman']:.2f} Pearson {metrics['pearson']:.2f}"
    return f"recall@1 {metrics['recall_at_1']:.3f} MRR {metrics['mrr']:.3f}"
