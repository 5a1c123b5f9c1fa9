"""Train a domain head and a sentiment head on one shared MiniLM encoder, the loop written out in plain PyTorch.
    .venv/bin/python examples/train_loop.py [--steps 100] [--batch 32] [--max-len 128] [--eval 500] [--seed 0]"""
import argparse
import csv
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from minimt.config import BertConfig
from minimt.model import BertModel
from minimt.multitask import Head
from minimt.pooling import mean_pool, normalize
from minimt.tokenizer import Tokenizer
from minimt.weights import load_weights

p = argparse.ArgumentParser()
for name, default in [("steps", 100), ("batch", 32), ("max-len", 128), ("eval", 500), ("seed", 0)]:
    p.add_argument(f"--{name}", type=int, default=default)
args = p.parse_args()
ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights" / "all-MiniLM-L6-v2"  # `make weights`; the reviews: `make data`

files = sorted((ROOT / "data" / "multi_domain_sentiment").glob("*.tsv"))
reviews = []  # (text, domain: the file it is in, sentiment: its label, 0 negative or 1 positive)
for domain, path in enumerate(files):
    with open(path, newline="", encoding="utf-8") as f:  # newline="": a quoted review may span several lines
        reviews += [(r["sentence"], domain, int(r["label"])) for r in csv.DictReader(f, delimiter="\t")]
rng = random.Random(args.seed)
rng.shuffle(reviews)
test, train = reviews[:args.eval], reviews[args.eval:]  # disjoint: accuracy on reviews it never trained on

torch.manual_seed(args.seed)  # the heads' initial weights and dropout
cfg = BertConfig.from_dir(WEIGHTS)
tok = Tokenizer(WEIGHTS / "tokenizer.json", args.max_len, cfg.do_lower_case)
bert = load_weights(BertModel(cfg), WEIGHTS / "model.safetensors")
heads = torch.nn.ModuleDict({"domain": Head(cfg.hidden_size, len(files)), "sentiment": Head(cfg.hidden_size, 2)})
model = torch.nn.ModuleDict({"bert": bert, "heads": heads})  # one handle for train() / eval()
opt = torch.optim.AdamW([{"params": bert.parameters(), "lr": 1e-4},  # pretrained: small steps, or it forgets
                         {"params": heads.parameters(), "lr": 1e-2}])  # random, on unit-length inputs: big steps
print(f"trainable parameters: {sum(w.numel() for w in model.parameters()):,}")


def forward(rows):  # rows of (text, domain, sentiment) -> {task: (B, C) logits}, {task: (B,) labels}
    texts, domain, sentiment = zip(*rows)
    batch = tok.pad(tok.encode(list(texts)))  # padded to this batch's longest text
    hidden = bert(batch["input_ids"], batch["attention_mask"])  # (B, T, H)
    z = normalize(mean_pool(hidden, batch["attention_mask"]))  # (B, H): the sentence embedding users get
    logits = {task: head(z) for task, head in heads.items()}
    return logits, {"domain": torch.tensor(domain), "sentiment": torch.tensor(sentiment)}


model.train()  # dropout on
for step in range(args.steps):
    logits, labels = forward(rng.sample(train, args.batch))
    loss = sum(F.cross_entropy(logits[t], labels[t]) for t in heads)  # one backward for both heads and the encoder
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if step % 20 == 0 or step == args.steps - 1:
        print(f"step {step:4d}  loss {loss.item():.4f}")

model.eval()  # dropout off: score the model itself, not a randomly thinned copy
with torch.no_grad():
    batches = [forward(test[i:i + args.batch]) for i in range(0, len(test), args.batch)]
for task, chance in [("domain", 1 / len(files)), ("sentiment", 1 / 2)]:
    correct = sum((logits[task].argmax(-1) == labels[task]).sum().item() for logits, labels in batches)
    print(f"{task} accuracy {correct / len(test):.3f} (chance {chance:.2f}) on {len(test)} held-out reviews")
