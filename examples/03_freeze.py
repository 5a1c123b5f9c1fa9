"""What to train. Each freezing scenario as code, with the table of what it leaves trainable.

    make freeze   (or: .venv/bin/python examples/03_freeze.py)

The measured effect of each scenario on real data is the freeze study in the README (`make study`).
"""
import torch

from minimt import SentenceEncoder
from minimt.freeze import freeze, open_units, param_groups, trainable_table, unfreeze_schedule
from minimt.multitask import MultiTaskModel

tasks = {"domain": ["books", "dvd", "electronics", "kitchen", "airline"], "sentiment": ["negative", "positive"]}
encoder = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")


def fresh():
    """New heads on the shared pretrained encoder, with every earlier scenario's freezing undone."""
    for p in encoder.model.parameters():
        p.requires_grad_(True)
    torch.manual_seed(0)
    return MultiTaskModel(encoder, tasks)


def show(title, why, model, **rates):
    print(f"\n=== {title}\n{why}")
    trainable = any(p.requires_grad for p in model.parameters())
    if trainable:
        print(trainable_table(model, param_groups(model, **{"lr": 2e-5, **rates})))
    else:
        n = sum(p.numel() for p in model.parameters())
        print(f"nothing to optimise: all {n:,} parameters frozen")


show("1. the entire network frozen",
     "No parameter moves, so there is nothing to train: the model is a fixed feature extractor. Useful for\n"
     "zero-shot use (compare each text with embeddings of the label names) or as a baseline. Any head on top\n"
     "stays at its random start, so only label-name similarity gives honest predictions.",
     freeze(fresh(), "all"))

show("2. only the backbone frozen (heads train)",
     "The pretrained sentence embedding is kept exactly; each head is a logistic regression on it. Cheapest\n"
     "(embeddings can be cached: each text is encoded once), safe with little data, no forgetting of the\n"
     "encoder's general similarity. Limited when the task needs features the embedding does not have.",
     freeze(fresh(), "backbone"), head_lr=1e-3)

show("3. one head frozen (continual learning)",
     "Freeze a task's head once it is good, and keep training the encoder and the other heads for a new task.\n"
     "The frozen head still reads the shared embedding, which keeps moving: its accuracy can drop (forgetting),\n"
     "which the freeze study measures. Freeze the backbone as well when the old task must not change at all.",
     freeze(fresh(), "head:domain"))

show("4. lower layers frozen (top 2 layers + heads train)",
     "Lower layers hold general lexical and syntactic features, upper ones task-specific ones: training only the\n"
     "top k layers adapts the representation at a fraction of the cost, with less forgetting than full\n"
     "fine-tuning. 'layers:0-3' and 'top:2' name the same units here.",
     freeze(fresh(), "top:2"))

print("\n=== 5. gradual unfreezing (ULMFiT)")
print("Start with the heads only (random heads would send large gradients into the encoder), then open one more\n"
      "layer from the top every N steps, so the lower, more general layers move last and least.")
model = freeze(fresh(), "backbone")
opt = torch.optim.AdamW(param_groups(model, lr=2e-5, head_lr=1e-3))
for step in (0, 100, 200, 300, 600, 700):
    opened = open_units(model, opt, unfreeze_schedule(step, every=100, n_layers=6), lr=2e-5)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"  step {step:3d}: opened {opened or '-'}; trainable parameters {n:,}")

show("6. layer-wise learning-rate decay (LLRD), everything trains",
     "Full fine-tuning, but each layer's lr is the one above it times 0.8: the top layer moves at lr, the\n"
     "embeddings at lr * 0.8**6 (26%). The heads get their own, larger lr because they start from random.",
     fresh(), layer_decay=0.8, head_lr=1e-3)
