"""Encode sentences into fixed-length embeddings and compare them by cosine similarity.

    make demo        (or: .venv/bin/python examples/01_embed.py)
"""
import numpy as np

from minimt import SentenceEncoder, cos_sim, semantic_search

sentences = [
    "This frame work generates embeddings for each sentence",
    "Sentences are passed as a list of strings.",
    "The quick brown fox jumps over the lazy dog.",
    "I am eating apple",
    "I like fruits",
    "The weather is lovely today.",
]

model = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")  # found or fetched on first use (download.locate)
cfg = model.config
print(f"all-MiniLM-L6-v2: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, {cfg.num_attention_heads} heads, "
      f"max {cfg.max_seq_length} tokens, {cfg.pooling} pooling, normalize={cfg.normalize}")

embeddings = model.encode(sentences)  # (6, 384) float32, each row of length 1
print(f"\nembeddings: shape {embeddings.shape}, dtype {embeddings.dtype}")
for s, e in zip(sentences, embeddings):  # 5 decimals: the 7th varies with the CPU's summation order
    print(f"  {s[:40]:<40} [{', '.join(f'{x:+.5f}' for x in e[:4])}, ...]  |e| = {np.linalg.norm(e):.4f}")

print("\ncosine similarity (rows and columns in the order above):")
sim = cos_sim(embeddings, embeddings)  # (6, 6)
for i, row in enumerate(sim.tolist()):
    print(f"  [{i}] " + " ".join(f"{x:6.3f}" for x in row))

a, b = model.encode(["I am eating apple", "I like fruits"])
print(f"\ncos('I am eating apple', 'I like fruits') = {cos_sim(a, b).item():.4f}")

print("\nsemantic search: which sentence answers each query best?")
queries = ["a fast animal leaps", "what should I eat?"]
for q, hits in zip(queries, semantic_search(model.encode(queries), embeddings, top_k=2)):
    print(f"  {q!r}: " + "; ".join(f"{sentences[h['corpus_id']]!r} ({h['score']:.3f})" for h in hits))
