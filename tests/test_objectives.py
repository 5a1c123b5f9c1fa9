"""Pairs and contrastive tasks (minimt/objectives.py): the losses on cases computed by hand, their gradients
reaching the encoder, their metrics, and the training loop mixing them with classification heads."""
import copy
import json
import math
import random

import pytest
import torch

from minimt.data import Example, Pair, Source, plan_epoch, read_source
from minimt.multitask import MultiTaskModel
from minimt.objectives import (cosent_loss, cosine_mse_loss, in_batch_negatives_loss, pair_losses, pair_metrics,
                               pair_tasks)
from minimt.train import TrainConfig, train
from conftest import TOPICS


def test_cosent_by_hand():
    # one ordered pair (0 scored above 1): log(1 + exp(20 * (cos_1 - cos_0)))
    assert cosent_loss(torch.tensor([0.5, 0.4]), torch.tensor([5.0, 1.0])).item() == pytest.approx(
        math.log(1 + math.exp(20 * (0.4 - 0.5))), rel=1e-5)
    assert cosent_loss(torch.tensor([0.4, 0.5]), torch.tensor([5.0, 1.0])).item() == pytest.approx(
        math.log(1 + math.exp(2)), rel=1e-5)
    # three pairs, scores 3 > 2 > 1: the three ordered pairs all enter one log-sum-exp
    cos, s = torch.tensor([0.2, 0.5, 0.4]), torch.tensor([3.0, 2.0, 1.0])
    want = math.log(1 + math.exp(20 * (0.5 - 0.2)) + math.exp(20 * (0.4 - 0.2)) + math.exp(20 * (0.4 - 0.5)))
    assert cosent_loss(cos, s).item() == pytest.approx(want, rel=1e-5)
    assert cosent_loss(cos, s * 7 + 1).item() == pytest.approx(want, rel=1e-5)  # only the order of the scores counts
    assert cosent_loss(cos, torch.ones(3)).item() == 0.0               # nothing to order


def test_mse_and_in_batch_by_hand():
    assert cosine_mse_loss(torch.tensor([0.5, 0.0]), torch.tensor([1.0, 0.0])).item() == pytest.approx(0.125)
    eye = torch.eye(2)
    # scale 2: logits 2 for the right positive, 0 for the other
    assert in_batch_negatives_loss(eye, eye, scale=2.0).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-5)
    # a hard negative equal to positive 0: anchor 0 now has a tie, anchor 1 one more wrong answer
    want = (math.log(1 + math.exp(-2) + 1) + math.log(1 + 2 * math.exp(-2))) / 2
    assert in_batch_negatives_loss(eye, eye, eye[:1], scale=2.0).item() == pytest.approx(want, rel=1e-5)


def test_metrics_by_hand():
    eye = torch.eye(3)
    assert pair_metrics("contrastive", eye, eye, None) == {"n": 3, "recall_at_1": 1.0, "mrr": 1.0}
    swapped = eye[[1, 0, 2]]  # anchors 0 and 1 find each other's positive first, their own second
    r = pair_metrics("contrastive", eye, swapped, None)
    assert r["recall_at_1"] == pytest.approx(1 / 3) and r["mrr"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    v = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # cosines 1, 0.707, 0
    r = pair_metrics("pairs", u, v, torch.tensor([5.0, 3.0, 0.0]))
    assert r["spearman"] == pytest.approx(100.0) and r["pearson"] > 99


@pytest.mark.parametrize("kind, loss", [("pairs", "cosent"), ("pairs", "mse"), ("contrastive", "in_batch")])
def test_gradients_of_each_loss_reach_the_encoder(tiny_encoder, kind, loss):
    model = MultiTaskModel(copy.deepcopy(tiny_encoder), {})  # no heads: the loss alone trains the encoder
    src = Source(path="x", text="a", labels={}, kind=kind, task="t", text_b="b", score="s" * (kind == "pairs"),
                 loss=loss)
    rows = [Example(f"x:{i}", f"{w} number {i}", {}, Pair("t", f"{w} item {i}", float(i % 3), ("hard negative",)
                                                          if kind == "contrastive" else ()))
            for i, w in enumerate(["pizza", "phone", "tennis", "bread"])]
    texts = [t for ex in rows for t in ex.texts()]
    starts = [0]
    for ex in rows[:-1]:
        starts.append(starts[-1] + len(ex.texts()))
    vectors = model(model.tokenizer.encode(texts))
    total = pair_losses(vectors, starts, rows, {"t": src}, None, {})
    total.backward()
    for name, p in model.bert.named_parameters():
        if "pooler" in name or "token_type" in name:
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient from the {kind} loss"


def write_pairs(tmp_path):
    """Scored pairs (same topic: 4-5, different: 0-1) and title/description-like positives, from the TOPICS words."""
    rng = random.Random(1)
    words = [(t, w) for t, ws in TOPICS.items() for w in ws]
    pairs, positives = ["a\tb\tscore"], ["title\tbody"]
    for i in range(90):
        (ta, wa), (tb, wb) = rng.choice(words), rng.choice(words)
        pairs.append(f"{wa} story {i}\t{wb} story {i}\t{(4 + rng.random()) if ta == tb else rng.random():.2f}")
        positives.append(f"{wa} news {i}\tall about {wa} and more {i}")
    (tmp_path / "pairs.tsv").write_text("\n".join(pairs) + "\n")
    (tmp_path / "pos.tsv").write_text("\n".join(positives) + "\n")
    return [{"path": str(tmp_path / "pairs.tsv"), "text": "a", "labels": {}, "kind": "pairs", "task": "sim",
             "text_b": "b", "score": "score"},
            {"path": str(tmp_path / "pos.tsv"), "text": "title", "labels": {}, "kind": "contrastive",
             "task": "retrieval", "text_b": "body"}]


@pytest.mark.parametrize("mixing", ["joint", "round_robin", "proportional"])
def test_training_mixes_heads_pairs_and_contrastive(tmp_path, data_file, tiny_checkpoint, mixing):
    sources = [{"path": str(data_file), "text": "text", "labels": {"topic": "topic", "mood": "mood"}}]
    cfg = TrainConfig(sources=sources + write_pairs(tmp_path), model=str(tiny_checkpoint), epochs=1, batch_size=16,
                      lr=1e-3, mixing=mixing, out_dir=str(tmp_path / "run"), task_weights={"sim": 0.5})
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    test = {r["task"]: r for r in rows if r["split"] == "test"}
    assert set(test) == {"topic", "mood", "sim", "retrieval"}
    assert test["sim"]["kind"] == "pairs" and -100 <= test["sim"]["spearman"] <= 100
    assert 0 < test["retrieval"]["mrr"] <= 1 and 0 <= test["retrieval"]["recall_at_1"] <= 1
    assert all(math.isfinite(r["loss"]) for r in rows if r["split"] == "train")


def test_pairs_alone_train_the_encoder_without_heads(tmp_path, tiny_checkpoint):
    cfg = TrainConfig(sources=write_pairs(tmp_path)[:1], model=str(tiny_checkpoint), epochs=2, batch_size=16,
                      lr=1e-3, out_dir=str(tmp_path / "run"))
    model = train(cfg)
    assert len(model.heads) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows if r["split"] == "test"} == {"sim"}


def test_plan_treats_pair_tasks_like_the_others(tmp_path):
    src = [Source(**s) for s in write_pairs(tmp_path)]
    train_set = read_source(src[0]) + read_source(src[1])
    plan = plan_epoch(train_set, ["sim", "retrieval"], 8, "round_robin", 0, 0)
    assert [t for t, _ in plan[:4]] == ["sim", "retrieval", "sim", "retrieval"]
    for task, idx in plan:
        assert all(train_set[i].pair.task == task for i in idx)
    assert set(pair_tasks(src)) == {"sim", "retrieval"}


@pytest.mark.parametrize("fields, says", [
    ({"kind": "pairs", "task": "sim", "text_b": "b"}, "needs ['task', 'text_b', 'score']"),
    ({"kind": "pairs", "task": "sim", "text_b": "b", "score": "s", "loss": "in_batch"}, "loss 'in_batch' is not one"),
    ({"kind": "ranking"}, "kind 'ranking'"),
    ({"task": "sim"}, "belong to kind 'pairs' or 'contrastive'"),
    ({"kind": "pairs", "task": "sim", "text_b": "b", "score": "s", "min_score": 4}, "min_score filters a contrastive"),
])
def test_source_errors(fields, says):
    with pytest.raises(ValueError, match=says.replace("[", r"\[").replace("]", r"\]")):
        Source(**{"path": "x.tsv", "text": "a", "labels": {}, **fields})


def test_a_score_that_is_not_a_number_names_the_row(tmp_path):
    (tmp_path / "p.tsv").write_text("a\tb\tscore\nx\ty\t4.5\nx\tz\tfive\n")
    with pytest.raises(ValueError, match=r"p.tsv: row 2 column 'score' holds 'five', not a number"):
        read_source(Source(path=str(tmp_path / "p.tsv"), text="a", labels={}, kind="pairs", task="s", text_b="b",
                           score="score"))


def test_min_score_keeps_only_close_pairs_as_positives(tmp_path):
    (tmp_path / "p.tsv").write_text("a\tb\tscore\nx\ty\t4.5\nu\tv\t1.0\n")
    rows = read_source(Source(path=str(tmp_path / "p.tsv"), text="a", labels={}, kind="contrastive", task="s",
                              text_b="b", score="score", min_score=4.0))
    assert [(ex.text, ex.pair.text_b) for ex in rows] == [("x", "y")]
