"""What trains and how fast: freezing units, optimizer param groups with layer-wise lr decay, gradual unfreezing.

A unit is a block that freezes as a whole (MultiTaskModel.units()): "embeddings", "layer.0" (nearest the
embeddings) .. "layer.{L-1}" (the top), "head.<task>". Targets name sets of units:

    all  backbone  embeddings  layers:a-b  layers:i  top:k (all of the backbone but its top k layers)  head:<task>

References: Howard & Ruder 2018, "Universal Language Model Fine-tuning" (ULMFiT: gradual unfreezing from the top,
discriminative learning rates); Clark et al. 2020, "ELECTRA", appendix A (layer-wise lr decay,
lr * decay ** (L - i) with layers counted 1..L there and the embeddings as 0); Devlin et al.'s BERT code (no weight decay on biases and LayerNorm weights);
minGPT's configure_optimizers (every parameter lands in exactly one group).

A frozen tensor is in no optimizer group, and freeze() clears its .grad: AdamW applies weight decay to every
tensor it holds whose grad is not None (a zero grad included), so a frozen tensor left in a group could shrink.
"""
import math
import re

import torch.nn as nn

from minimt.errors import UserError, UserTypeError


def _n_layers(model):
    return len(model.bert.layers)


def _forms(model):
    L = _n_layers(model)
    return (f"valid targets: 'all', 'backbone', 'embeddings', 'layers:a-b' or 'layers:i' (0 <= a <= b < {L}), "
            f"'top:k' (0 <= k <= {L}), 'head:<task>' with task one of {sorted(model.heads)}")


def resolve(model, target):
    """A target -> the names of the units it covers, in model.units() order."""
    if not isinstance(target, str):
        raise UserTypeError(f"target {target!r} is not a string; pass several as freeze(model, 'a', 'b'). "
                            + _forms(model))
    L = _n_layers(model)
    layers = [f"layer.{i}" for i in range(L)]
    heads = [f"head.{t}" for t in model.heads]
    if target == "all":
        return ["embeddings"] + layers + heads
    if target == "backbone":
        return ["embeddings"] + layers
    if target == "embeddings":
        return ["embeddings"]
    kind, _, arg = target.partition(":")
    if kind == "layers":
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", arg)
        if m is None:
            raise UserError(f"target {target!r}: write layers:a-b or layers:i with whole numbers. " + _forms(model))
        a = int(m[1])
        b = int(m[2]) if m[2] is not None else a
        if not 0 <= a <= b < L:
            raise UserError(f"target {target!r}: layers {a}-{b} are not within 0-{L - 1} "
                            f"(the model has {L} layers, 0 = nearest the embeddings). " + _forms(model))
        return layers[a:b + 1]
    if kind == "top":
        if not re.fullmatch(r"\d+", arg) or int(arg) > L:
            raise UserError(f"target {target!r}: k must be a whole number from 0 to {L}. " + _forms(model))
        return ["embeddings"] + layers[:L - int(arg)]
    if kind == "head":
        if arg not in model.heads:
            raise UserError(f"target {target!r}: no task {arg!r}. " + _forms(model))
        return [f"head.{arg}"]
    raise UserError(f"target {target!r} is not known. " + _forms(model))


def _set_trainable(model, targets, flag):
    # no targets = an empty set of units: freeze(model, *cfg.freeze) with nothing configured changes nothing
    names = {name for t in targets for name in resolve(model, t)}
    for name, unit in model.units():
        if name in names:
            for p in unit.parameters():
                p.requires_grad_(flag)
                if not flag:
                    p.grad = None  # an optimizer that still holds this tensor skips it only when grad is None
    model.train(model.training)  # MultiTaskModel.train puts fully frozen units in eval mode (no dropout)
    return model


def freeze(model, *targets):
    """Stop the units of every target from learning: freeze(model, 'backbone', 'head:topic')."""
    return _set_trainable(model, targets, False)


def unfreeze(model, *targets):
    """Let the units of every target learn again; an existing optimizer needs their groups (see open_units)."""
    return _set_trainable(model, targets, True)


def check_rates(lr, weight_decay, layer_decay, head_lr):
    """The one check of the learning-rate settings (param_groups, open_units and TrainConfig call it)."""
    rules = {"lr": (lr, lambda v: 0 < v < math.inf, "> 0"),
             "weight_decay": (weight_decay, lambda v: 0 <= v < math.inf, ">= 0"),
             "layer_decay": (layer_decay, lambda v: 0 < v <= 1, "in (0, 1] (1 = the same lr everywhere)"),
             "head_lr": (head_lr, lambda v: 0 <= v < math.inf, ">= 0 (0 = the top layer's lr)")}
    for name, (v, ok, rule) in rules.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not ok(v):
            raise UserError(f"{name}={v!r} is out of range: it must be {rule}")


def _unit_lr(name, L, lr, layer_decay, head_lr):
    # the top layer gets lr; each step down multiplies by layer_decay; the embeddings sit one step below layer 0
    if name == "embeddings":
        return lr * layer_decay ** L
    if name.startswith("layer."):
        return lr * layer_decay ** (L - 1 - int(name.split(".")[1]))
    return head_lr or lr  # 0: the heads learn at the top layer's rate


def _groups(model, names, lr, weight_decay, layer_decay, head_lr):
    """Up to two groups per named unit (decay, no decay), trainable tensors only."""
    groups = []
    for name, unit in model.units():
        if name not in names:
            continue
        decay, no_decay = [], []
        for module in unit.modules():
            for pname, p in module.named_parameters(recurse=False):
                if p.requires_grad:
                    # BERT's convention: shrinking a bias or a LayerNorm gain towards 0 is not regularisation
                    skip = pname == "bias" or isinstance(module, nn.LayerNorm)
                    (no_decay if skip else decay).append(p)
        unit_lr = _unit_lr(name, _n_layers(model), lr, layer_decay, head_lr)
        if decay:
            groups.append({"name": name, "params": decay, "lr": unit_lr, "weight_decay": weight_decay})
        if no_decay:
            groups.append({"name": f"{name}/no_decay", "params": no_decay, "lr": unit_lr, "weight_decay": 0.0})
    return groups


def param_groups(model, lr, weight_decay=0.01, layer_decay=1.0, head_lr=0.0):
    """The trainable parameters as AdamW groups: torch.optim.AdamW(param_groups(model, 2e-5, layer_decay=0.9))."""
    check_rates(lr, weight_decay, layer_decay, head_lr)
    groups = _groups(model, {name for name, _ in model.units()}, lr, weight_decay, layer_decay, head_lr)
    if not groups:
        raise UserError("every parameter is frozen, so there is nothing to train; unfreeze a target first, "
                        "e.g. unfreeze(model, 'head:<task>')")
    in_groups = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(in_groups) == len(set(in_groups)), "a parameter landed in two groups"
    assert set(in_groups) == trainable, (f"{len(trainable - set(in_groups))} trainable parameters are in no unit "
                                         "of model.units(), or a frozen one is in a group")
    return groups


def trainable_table(model, groups):
    """One row per group, then trainable / frozen / total parameter counts. Unnamed groups are numbered."""
    rows = [f"{'group':<24} {'tensors':>7} {'parameters':>12} {'lr':>10} {'weight decay':>12}"]
    for i, g in enumerate(groups):
        n = sum(p.numel() for p in g["params"])
        rows.append(f"{g.get('name', f'group {i}'):<24} {len(g['params']):>7} {n:>12,} "
                    f"{g['lr']:>10.3g} {g['weight_decay']:>12g}")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    total = trainable + frozen
    for label, n in (("trainable", trainable), ("frozen", frozen), ("total", total)):
        rows.append(f"{label:<24} {'':>7} {n:>12,} {100 * n / total:>9.1f}%")
    return "\n".join(rows)


def unfreeze_schedule(step, every, n_layers):
    """ULMFiT's gradual unfreezing: the backbone units open at `step`, top layer first, embeddings last.

    Steps [0, every) train the heads only (returns []); each further `every` steps open one more unit:
    layer.{L-1}, layer.{L-2}, .., layer.0, then embeddings."""
    if not isinstance(every, int) or every < 1:
        raise UserError(f"every must be a whole number of steps >= 1, got {every!r}")
    if not isinstance(step, int) or step < 0:
        raise UserError(f"step must be a whole number >= 0, got {step!r}")
    if not isinstance(n_layers, int) or n_layers < 1:
        raise UserError(f"n_layers must be a whole number >= 1, got {n_layers!r}")
    order = [f"layer.{i}" for i in reversed(range(n_layers))] + ["embeddings"]
    return order[:step // every]


def open_units(model, optimizer, names, lr, weight_decay=0.01, layer_decay=1.0, head_lr=0.0):
    """Unfreeze the named units that are still frozen and give them groups in `optimizer` (same rules as
    param_groups). Returns the names it opened; units already open are left as they are."""
    if isinstance(names, str):
        raise UserTypeError(f"names must be a list of unit names, e.g. [{names!r}], not the string {names!r}")
    check_rates(lr, weight_decay, layer_decay, head_lr)
    units = dict(model.units())
    unknown = [n for n in names if n not in units]
    if unknown:
        raise UserError(f"no unit named {unknown}; units are {list(units)}")
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    opened = []
    for name in dict.fromkeys(names):  # in the order given, each once
        grads = [p.requires_grad for p in units[name].parameters()]
        if all(grads):
            continue
        if any(grads):
            raise UserError(f"unit {name} is partly frozen (some tensors were set by hand); open_units opens "
                            f"whole frozen units only: unfreeze(model, ...) it and rebuild the optimizer")
        if any(id(p) in held for p in units[name].parameters()):
            raise UserError(f"the optimizer already holds tensors of the frozen unit {name}; build it with "
                            f"param_groups(model, ...), which leaves frozen tensors out")
        opened.append(name)
    for name in opened:
        for p in units[name].parameters():
            p.requires_grad_(True)
    for group in _groups(model, set(opened), lr, weight_decay, layer_decay, head_lr):
        optimizer.add_param_group(group)
    model.train(model.training)  # the opened units leave eval mode
    return opened
