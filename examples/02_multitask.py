"""One shared encoder, one head per task. Follows a batch through the model, printing every shape.

    make multitask   (or: .venv/bin/python examples/02_multitask.py)

One head classifies a product review's domain, the other its sentiment. The heads are untrained here, so their
probabilities are near uniform: what matters is the shape of the computation (training is examples/04_train.py).
"""
import torch

from minimt import SentenceEncoder
from minimt.multitask import MultiTaskModel
from minimt.pooling import normalize, pool

tasks = {
    "domain": ["books", "dvd", "electronics", "kitchen", "airline"],  # what the review is about
    "sentiment": ["negative", "positive"],                             # how the writer feels
}
torch.manual_seed(0)
encoder = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
model = MultiTaskModel(encoder, tasks, head="linear", dropout=0.1).eval()

texts = ["The blender died after two weeks and the lid leaks.",
         "A gripping novel, I could not put it down!",
         "Crew were friendly and the flight landed early."]

# 1) text -> token ids, padded to the longest text of the batch
batch = model.tokenizer(texts)
print(f"input_ids        {tuple(batch['input_ids'].shape)}   (B texts, T tokens incl. [CLS] and [SEP])")
print(f"attention_mask   {tuple(batch['attention_mask'].shape)}   1 = real token, 0 = padding")

with torch.no_grad():
    # 2) the shared encoder: one vector per token, each layer keeps the shape
    positions = torch.arange(batch["input_ids"].shape[1])                  # (T,) the same for every text
    x = model.bert.embeddings(batch["input_ids"], positions, batch["token_type_ids"])
    print(f"embeddings       {tuple(x.shape)}  word + position + segment, LayerNorm")
    mask = (1.0 - batch["attention_mask"][:, None, None, :].float()) * torch.finfo(torch.float32).min
    for i, layer in enumerate(model.bert.layers):
        x = layer(x, mask)
        print(f"layer {i}          {tuple(x.shape)}  self-attention (12 heads x 32) + feed-forward (1536)")

    # 3) pooling: the sentence embedding every task shares
    emb = normalize(pool(x, batch["attention_mask"], "mean"))
    print(f"sentence emb.    {tuple(emb.shape)}      mean over real tokens, L2-normalised")

    # 4) one head per task on the same embedding
    logits = model.classify(emb)
    for t, lg in logits.items():
        print(f"logits[{t!r}]{' ' * (11 - len(t))}{tuple(lg.shape)}        Dropout -> Linear(384, {lg.shape[1]})")

    # the model's forward does steps 1-3 in one call, on the texts' real tokens packed without padding
    # (model.Packed): the same numbers, without the padding's work
    pooled = model(model.tokenizer.encode(texts))
    same = model.classify(pooled)
    assert torch.allclose(pooled, emb, atol=1e-6) and all(torch.allclose(same[t], logits[t], atol=1e-6) for t in tasks)

print("\nprobabilities from the untrained heads (near uniform: nothing learned yet)")
for i, text in enumerate(texts):
    print(f"  {text}")
    for t in tasks:
        probs = logits[t][i].softmax(-1)  # (C,)
        print(f"    {t:<10} " + "  ".join(f"{name} {q:.2f}" for name, q in zip(tasks[t], probs.tolist())))
print(f"model.predict(texts[:1]) -> {model.predict(texts[:1])}")

n_enc = sum(p.numel() for p in model.bert.parameters())
n_heads = {t: sum(p.numel() for p in h.parameters()) for t, h in model.heads.items()}
print(f"\nparameters: shared encoder {n_enc:,}; heads " + ", ".join(f"{t} {n:,}" for t, n in n_heads.items()))
