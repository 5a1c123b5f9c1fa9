"""Train the two-task model on real reviews, then label reviews it has never seen.

    make train   (or: .venv/bin/python examples/04_train.py [--key=value ...])

Data: data/multi_domain_sentiment (`make data`), 10,000 reviews (Blitzer et al. 2007 + airline reviews), each with a
domain (books, dvd, electronics, kitchen, airline) and a polarity (negative, positive); a seeded
80/10/10 split. Settings: examples/train_multidomain.json; any can be overridden, e.g. --max_steps=50.
Leaves runs/train/best/ (the checkpoint with the best mean dev macro-F1), runs/train/metrics.jsonl and
runs/train/predictions.jsonl.
"""
import sys
from pathlib import Path

from minimt.tools.plot import plot_run
from minimt.train import load_config, train

args = sys.argv[1:]
if not any(a.startswith("--resume") for a in args):
    args = ["--overwrite=true"] + args  # the example starts over each time (a reused out_dir is refused otherwise)
cfg = load_config(Path(__file__).with_name("train_multidomain.json"), args)
model = train(cfg)
print(f"curves: {plot_run(cfg.out_dir)}")  # loss, lr and dev scores against steps (python -m minimt plot)

# written for this example: none of these is in the dataset
reviews = [
    "The seat was cramped, the meal was cold and our bags arrived a day late. Never flying with them again.",
    "Lovely cabin crew and we landed twenty minutes early. Smooth flight from start to finish.",
    "This toaster burns one side and leaves the other raw. The handle snapped off in a week.",
    "I use this skillet every morning; it heats evenly and cleans up in seconds.",
    "The plot drags, the characters are flat and the ending makes no sense. I gave up at chapter ten.",
    "A moving, beautifully written memoir. I read it in two sittings and cried twice.",
    "The picture quality on this blu-ray is stunning and the extras are worth the price alone.",
    "The headphones stopped charging after a month and the left ear crackles.",
]
print(f"\nnew reviews, labelled by {Path(cfg.out_dir) / 'best'}:")
for text, pred in zip(reviews, model.predict(reviews)):
    (domain, p_domain), (polarity, p_polarity) = pred["domain"], pred["sentiment"]
    print(f"  {domain:<11} {p_domain:.2f}  {polarity:<8} {p_polarity:.2f}  {text[:70]}")
