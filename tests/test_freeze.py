"""Freezing, param groups and gradual unfreezing, checked by what one real AdamW step does to each tensor.

The model is the random 2-layer tiny encoder with two heads; "changed" means not bit-identical after the step.
"""
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from minimt.freeze import (freeze, open_units, param_groups, resolve, trainable_table, unfreeze,
                           unfreeze_schedule)
from minimt.multitask import MultiTaskModel

TASKS = {"topic": ["a", "b", "c"], "sentiment": ["neg", "pos"]}
BACKBONE = {"embeddings", "layer.0", "layer.1"}
UNITS = BACKBONE | {"head.topic", "head.sentiment"}


@pytest.fixture
def model(tiny_encoder):
    return MultiTaskModel(tiny_encoder, TASKS)


def unit_of(param_name):
    """Which unit a parameter belongs to, read off its name (independently of minimt.freeze)."""
    parts = param_name.split(".")
    if parts[:2] == ["bert", "embeddings"]:
        return "embeddings"
    if parts[:2] == ["bert", "layers"]:
        return f"layer.{parts[2]}"
    assert parts[0] == "heads", param_name
    return f"head.{parts[1]}"


def batch(seed=0, B=4, T=8):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 30522, (B, T), generator=g).tolist()
    ids[1] = ids[1][:5]                  # one shorter text, as in a real batch
    labels = {t: torch.randint(0, len(names), (B,), generator=g) for t, names in TASKS.items()}
    return ids, labels


def loss_of(model, seed=0):
    ids, labels = batch(seed)
    logits = model.classify(model(ids))
    return sum(F.cross_entropy(logits[t], labels[t]) for t in TASKS)


def step(model, optimizer, seed=0):
    model.train()
    optimizer.zero_grad()
    loss = loss_of(model, seed)
    loss.backward()
    optimizer.step()
    return loss.item()


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_changed_exactly(model, before, trainable_units):
    after = dict(model.named_parameters())
    for name, old in before.items():
        changed = not torch.equal(old, after[name])
        assert changed == (unit_of(name) in trainable_units), (
            f"{name} ({unit_of(name)}) {'changed' if changed else 'did not change'}; "
            f"trainable units: {sorted(trainable_units)}")


MODES = [
    ((), set()),
    (("backbone",), BACKBONE),
    (("embeddings",), {"embeddings"}),
    (("layers:0-0",), {"layer.0"}),
    (("layers:1-1",), {"layer.1"}),
    (("layers:1",), {"layer.1"}),
    (("layers:0-1",), {"layer.0", "layer.1"}),
    (("top:0",), BACKBONE),
    (("top:1",), {"embeddings", "layer.0"}),
    (("top:2",), {"embeddings"}),
    (("head:topic",), {"head.topic"}),
    (("head:sentiment",), {"head.sentiment"}),
    (("embeddings", "head:sentiment"), {"embeddings", "head.sentiment"}),
    (("layers:0-0", "layers:1-1"), {"layer.0", "layer.1"}),
    (("backbone", "head:topic"), BACKBONE | {"head.topic"}),
    (("top:1", "head:topic", "head:sentiment"), {"embeddings", "layer.0", "head.topic", "head.sentiment"}),
]


@pytest.mark.parametrize("targets, frozen", MODES, ids=[",".join(t) or "nothing" for t, _ in MODES])
def test_one_step_moves_exactly_the_trainable_tensors(model, targets, frozen):
    freeze(model, *targets)  # no targets: nothing frozen (how the training loop passes an empty config)
    for name, p in model.named_parameters():
        assert p.requires_grad == (unit_of(name) not in frozen), name
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-3, weight_decay=0.1))
    before = snapshot(model)
    step(model, optimizer)
    assert_changed_exactly(model, before, UNITS - frozen)  # weight decay 0.1 must not touch a frozen tensor
    for name, p in model.named_parameters():
        if unit_of(name) in frozen:
            assert p.grad is None, f"frozen {name} got a gradient"


def test_all_freezes_every_unit_and_leaves_nothing_to_train(model):
    assert resolve(model, "all") == ["embeddings", "layer.0", "layer.1", "head.topic", "head.sentiment"]
    freeze(model, "all").train()
    assert not any(p.requires_grad for p in model.parameters())
    assert not any(m.training for _, unit in model.units() for m in unit.modules())
    ids, _ = batch()
    pooled = model(ids)
    logits = model.classify(pooled)
    assert not pooled.requires_grad and not any(lg.requires_grad for lg in logits.values())
    with pytest.raises(ValueError, match="every parameter is frozen, so there is nothing to train"):
        param_groups(model, lr=1e-3)
    unfreeze(model, "all").train()
    assert all(p.requires_grad for p in model.parameters()) and all(m.training for m in model.modules())


def test_resolve_lists_the_units_of_each_target(model):
    assert resolve(model, "backbone") == ["embeddings", "layer.0", "layer.1"]
    assert resolve(model, "embeddings") == ["embeddings"]
    assert resolve(model, "layers:0-1") == ["layer.0", "layer.1"]
    assert resolve(model, "layers:1") == ["layer.1"]
    assert resolve(model, "top:0") == ["embeddings", "layer.0", "layer.1"]
    assert resolve(model, "top:1") == ["embeddings", "layer.0"]
    assert resolve(model, "top:2") == ["embeddings"]
    assert resolve(model, "head:sentiment") == ["head.sentiment"]


def test_nothing_frozen_trains_every_encoder_tensor_down_to_the_word_embeddings(model):
    """Guards against the encoder running under no_grad/inference_mode while it should learn."""
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-3, weight_decay=0.1))
    before = snapshot(model)
    step(model, optimizer)
    ids, _ = batch()
    word_grad = model.bert.embeddings.word.weight.grad
    assert word_grad is not None, "no gradient reached the word embeddings"
    used = torch.tensor([t for x in ids for t in x])
    assert word_grad[used].abs().sum(-1).gt(0).all(), "a used token's word vector got no gradient"
    for name, p in model.bert.named_parameters():
        assert p.grad is not None, f"bert.{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"bert.{name} got an all-zero gradient"
    assert_changed_exactly(model, before, UNITS)


def test_frozen_backbone_has_no_encoder_gradients_and_the_heads_still_learn(model):
    freeze(model, "backbone")
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-2, weight_decay=0.01))
    losses = [step(model, optimizer) for _ in range(30)]
    assert all(p.grad is None for p in model.bert.parameters())
    assert all(p.grad is not None for p in model.heads.parameters())
    assert losses[-1] < 0.8 * losses[0], f"the heads did not learn a fixed batch: {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_freezing_after_backward_clears_stale_gradients(model):
    """An optimizer built before freeze() still holds the tensors; with grad None, AdamW (and its decay) skips them."""
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-3, weight_decay=0.1))
    loss_of(model).backward()
    freeze(model, "backbone")
    before = snapshot(model)
    optimizer.step()
    assert_changed_exactly(model, before, {"head.topic", "head.sentiment"})


def dropout_differs(module, *inputs):
    with torch.no_grad():
        return not torch.equal(module(*inputs), module(*inputs))


def test_frozen_units_run_in_eval_mode_under_train(model):
    freeze(model, "layers:0-0", "head:topic")
    model.train()
    layer0, layer1 = model.bert.layers
    assert not any(m.training for m in layer0.modules()) and not any(m.training for m in model.heads.topic.modules())
    assert layer1.training and model.bert.embeddings.training and model.heads.sentiment.training
    x, mask = torch.randn(2, 5, 32), torch.zeros(2, 1, 1, 5)
    pooled = torch.randn(64, 32)
    assert not dropout_differs(layer0, x, mask), "a frozen layer still applies dropout"
    assert not dropout_differs(model.heads.topic, pooled), "a frozen head still applies dropout"
    assert dropout_differs(layer1, x, mask) and dropout_differs(model.heads.sentiment, pooled)

    unfreeze(model, "layers:0-0")          # back to train mode at once: freeze/unfreeze refresh the modes
    assert layer0.training and dropout_differs(layer0, x, mask)

    model.eval()
    freeze(model, "embeddings")             # and they never switch an eval model to training
    assert not any(m.training for m in model.modules())


def test_layerwise_lr_decay_gives_the_exact_lrs(model):
    groups = param_groups(model, lr=1e-3, weight_decay=0.05, layer_decay=0.5, head_lr=3e-3)
    want = {"embeddings": 2.5e-4, "layer.0": 5e-4, "layer.1": 1e-3, "head.topic": 3e-3, "head.sentiment": 3e-3}
    assert [g["name"] for g in groups] == [n + s for n in want for s in ("", "/no_decay")]
    for g in groups:
        assert g["lr"] == want[g["name"].split("/")[0]], g["name"]
    optimizer = torch.optim.AdamW(groups)
    assert [g["lr"] for g in optimizer.param_groups] == [want[n] for n in want for _ in range(2)]

    # the lrs reach the update: Adam's first step moves each tensor by at most lr, nearly lr where |grad| >> eps
    wd0 = torch.optim.AdamW(param_groups(model, lr=1e-3, weight_decay=0.0, layer_decay=0.5, head_lr=3e-3))
    before = snapshot(model)
    step(model, wd0)
    for name, p in model.named_parameters():
        moved = (p.detach() - before[name]).abs().max().item()
        assert moved == pytest.approx(want[unit_of(name)], rel=1e-3), f"{name} moved {moved:g}"

    same = param_groups(model, lr=2e-5, layer_decay=0.8)  # heads default to lr; 0.8 ** k from the top
    lrs = {g["name"]: g["lr"] for g in same}
    assert lrs["layer.1"] == 2e-5 and lrs["head.topic"] == 2e-5 and lrs["head.sentiment/no_decay"] == 2e-5
    assert lrs["layer.0"] == pytest.approx(2e-5 * 0.8, rel=1e-15)
    assert lrs["embeddings"] == pytest.approx(2e-5 * 0.64, rel=1e-15)
    assert {g["lr"] for g in param_groups(model, lr=1e-4)} == {1e-4}  # layer_decay 1: one lr everywhere


def test_no_weight_decay_on_biases_and_layernorm_weights(model):
    groups = param_groups(model, lr=1e-3, weight_decay=0.05)
    modules = dict(model.named_modules())
    exempt = {id(p) for n, p in model.named_parameters()
              if n.endswith(".bias") or isinstance(modules[n.rsplit(".", 1)[0]], nn.LayerNorm)}
    # embeddings LN; per layer 4 Linear biases (qkv, out, up, down) + 2 LN x 2; heads
    assert len(exempt) == 2 + 2 * (4 + 2 + 2) + 2
    for g in groups:
        no_decay = g["name"].endswith("/no_decay")
        assert g["weight_decay"] == (0.0 if no_decay else 0.05), g["name"]
        for p in g["params"]:
            assert (id(p) in exempt) == no_decay, f"{g['name']} holds a tensor of shape {tuple(p.shape)}"


@pytest.mark.parametrize("targets", [(), ("layers:1-1",), ("backbone", "head:sentiment")])
def test_every_trainable_parameter_is_in_exactly_one_group(model, targets):
    if targets:
        freeze(model, *targets)
    ids = [id(p) for g in param_groups(model, lr=1e-3) for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}


def test_a_trainable_parameter_outside_every_unit_trips_the_assertion(model):
    model.extra = nn.Parameter(torch.zeros(3))
    with pytest.raises(AssertionError, match="trainable parameters are in no unit"):
        param_groups(model, lr=1e-3)


def test_trainable_table_counts(model):
    freeze(model, "embeddings", "head:topic")
    groups = param_groups(model, lr=1e-3, layer_decay=0.5)
    table = trainable_table(model, groups).splitlines()
    assert len(table) == 1 + len(groups) + 3
    for row, g in zip(table[1:], groups):
        name, tensors, params, lr, wd = row.split()
        assert (name, int(tensors), int(params.replace(",", ""))) == (
            g["name"], len(g["params"]), sum(p.numel() for p in g["params"]))
        assert float(lr) == pytest.approx(g["lr"], rel=1e-2) and float(wd) == g["weight_decay"]
    frozen = sum(p.numel() for p in model.bert.embeddings.parameters()) + \
        sum(p.numel() for p in model.heads.topic.parameters())
    total = sum(p.numel() for p in model.parameters())
    for row, label, n in zip(table[-3:], ("trainable", "frozen", "total"), (total - frozen, frozen, total)):
        assert row.split() == [label, f"{n:,}", f"{100 * n / total:.1f}%"]


def test_unfreeze_schedule_opens_top_down_then_embeddings():
    every_unit = ["layer.1", "layer.0", "embeddings"]
    want = {0: [], 9: [], 10: ["layer.1"], 19: ["layer.1"], 20: ["layer.1", "layer.0"],
            29: ["layer.1", "layer.0"], 30: every_unit, 10_000: every_unit}
    for s, names in want.items():
        assert unfreeze_schedule(s, every=10, n_layers=2) == names, f"step {s}"
    assert unfreeze_schedule(35, every=10, n_layers=6) == ["layer.5", "layer.4", "layer.3"]
    assert unfreeze_schedule(3, every=1, n_layers=1) == ["layer.0", "embeddings"]


def test_open_units_follows_the_schedule(model):
    freeze(model, "backbone")
    rates = dict(lr=1e-3, weight_decay=0.1, layer_decay=0.5)
    optimizer = torch.optim.AdamW(param_groups(model, **rates))
    heads = {"head.topic", "head.sentiment"}
    opened_at = {}
    for s in range(0, 40):
        opened = open_units(model, optimizer, unfreeze_schedule(s, every=10, n_layers=2), **rates)
        if opened:
            opened_at[s] = opened
        if s in (0, 10, 20, 30):
            before = snapshot(model)
            step(model, optimizer, seed=s)
            trainable = heads | set(unfreeze_schedule(s, 10, 2))
            assert_changed_exactly(model, before, trainable)
            assert all(model.bert.layers[int(re.fullmatch(r"layer\.(\d+)", u)[1])].training
                       for u in trainable if u.startswith("layer."))
    assert opened_at == {10: ["layer.1"], 20: ["layer.0"], 30: ["embeddings"]}
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {"head.topic": 1e-3, "head.topic/no_decay": 1e-3, "head.sentiment": 1e-3,
                   "head.sentiment/no_decay": 1e-3, "layer.1": 1e-3, "layer.1/no_decay": 1e-3,
                   "layer.0": 5e-4, "layer.0/no_decay": 5e-4, "embeddings": 2.5e-4, "embeddings/no_decay": 2.5e-4}
    held = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(held) == sorted(id(p) for p in model.parameters())


@pytest.mark.parametrize("target, message", [
    ("everything", "'everything' is not known"),
    ("Backbone", "'Backbone' is not known"),
    ("layers:2", "layers 2-2 are not within 0-1"),
    ("layers:1-0", "layers 1-0 are not within 0-1"),
    ("layers:0-2", "layers 0-2 are not within 0-1"),
    ("layers:a-b", "write layers:a-b or layers:i with whole numbers"),
    ("layers:-1", "write layers:a-b or layers:i with whole numbers"),
    ("layers:", "write layers:a-b or layers:i with whole numbers"),
    ("top:3", "k must be a whole number from 0 to 2"),
    ("top:x", "k must be a whole number from 0 to 2"),
    ("head:nope", "no task 'nope'"),
    ("head:", "no task ''"),
])
def test_bad_targets_name_the_problem_and_list_the_valid_forms(model, target, message):
    with pytest.raises(ValueError) as err:
        freeze(model, target)
    text = str(err.value)
    assert message in text and f"target {target!r}" in text
    assert "valid targets: 'all', 'backbone', 'embeddings', 'layers:a-b'" in text
    assert "'top:k' (0 <= k <= 2)" in text and "['sentiment', 'topic']" in text
    assert all(p.requires_grad for p in model.parameters()), "a failed freeze() must change nothing"


def test_freeze_takes_names_not_a_list(model):
    with pytest.raises(TypeError, match="is not a string; pass several as freeze"):
        freeze(model, ["backbone"])


@pytest.mark.parametrize("kw, message", [
    (dict(lr=0), "lr=0 is out of range: it must be > 0"),
    (dict(weight_decay=-0.1), "weight_decay=-0.1 is out of range: it must be >= 0"),
    (dict(layer_decay=0), r"layer_decay=0 is out of range: it must be in \(0, 1\]"),
    (dict(layer_decay=1.5), r"layer_decay=1.5 is out of range: it must be in \(0, 1\]"),
    (dict(head_lr=-1.0), r"head_lr=-1.0 is out of range: it must be >= 0 \(0 = the top layer.s lr\)")])
def test_bad_rates_are_named(model, kw, message):
    with pytest.raises(ValueError, match=message):
        param_groups(model, **{"lr": 1e-3, **kw})


@pytest.mark.parametrize("args, message", [
    ((5, 0, 2), "every must be a whole number of steps >= 1"), ((5, 2.5, 2), "every must be"),
    ((-1, 10, 2), "step must be a whole number >= 0"), ((5, 10, 0), "n_layers must be a whole number >= 1")])
def test_bad_schedules_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        unfreeze_schedule(*args)


def test_open_units_errors(model):
    freeze(model, "backbone")
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-3))
    with pytest.raises(ValueError, match=r"no unit named \['layer.7'\]; units are \['embeddings', 'layer.0'"):
        open_units(model, optimizer, ["layer.1", "layer.7"], lr=1e-3)
    with pytest.raises(TypeError, match=r"names must be a list of unit names, e.g. \['layer.1'\]"):
        open_units(model, optimizer, "layer.1", lr=1e-3)
    model.bert.layers[1].ln1.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="unit layer.1 is partly frozen"):
        open_units(model, optimizer, ["layer.1"], lr=1e-3)
    assert not model.bert.layers[0].ln1.weight.requires_grad  # nothing opened when a name fails

    everything = torch.optim.AdamW(model.parameters())   # holds the frozen tensors too: not built by param_groups
    with pytest.raises(ValueError, match="already holds tensors of the frozen unit layer.0; build it with param_gr"):
        open_units(model, everything, ["layer.0"], lr=1e-3)
