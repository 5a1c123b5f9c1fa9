"""Write the golden files: what the reference implementation (sentence-transformers / transformers) outputs.

Run by `make golden` in its own environment (.venv-dev); minimt never computes its own expected values, and the
tests that read these files need only minimt's dependencies. Outputs, next to this script:
  minilm.json            inputs (texts, batch), reference token ids, library versions
  minilm.safetensors     sentence embeddings (sentence-transformers encode) and token-level last_hidden_state
                         (transformers BertModel on a padded batch, real tokens only)
  tiny_bert/             a random 3-layer BERT saved in the bert-base-uncased dialect (bert. prefix, LayerNorm
                         gamma/beta, cls.* heads), with transformers' outputs on ids that use token types 0, 1, 2
  st/                    directories written by sentence-transformers itself, with its encode() of TEXTS:
                         a random BERT saved twice (CLS pooling + Normalize; max pooling, no Normalize), and a
                         random DistilBERT, bare (transformers' save_pretrained) and saved by sentence-transformers
  util.json              sentence-transformers' util functions (semantic_search with chunks and both score functions,
                         paraphrase mining, community detection) on fixed embeddings, and its paraphrase_mining and
                         model.similarity with all-MiniLM-L6-v2 on sentences
  bert_keys.json         every tensor name and shape of transformers' BertModel for all-MiniLM-L6-v2: what an
                         export must contain for AutoModel.from_pretrained to find no missing or unexpected key
"""
import json
import platform
from pathlib import Path

import numpy as np
import sentence_transformers
import tokenizers
import torch
import transformers
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer

from minimt.io.download import fetch

HERE = Path(__file__).resolve().parent
MINILM = fetch("all-MiniLM-L6-v2")  # weights/ or the Hugging Face cache, wherever `make weights` found it

LONG_PARAGRAPH = ("The committee met on Tuesday to review the quarterly budget, and after a long discussion about "
                  "travel costs, software licences and the price of coffee, it agreed to postpone the decision. ")
TEXTS = [
    # the mission's own sentences
    "I am eating apple",
    "I like fruits",
    "This frame work generates embeddings for each sentence",
    # ordinary English of different lengths
    "A man is playing a guitar.",
    "The new movie is awesome, I loved every minute of it!",
    "Stocks fell sharply on Monday after the central bank raised interest rates by half a point.",
    "What is the capital of Australia?",
    # case and accents
    "HELLO WORLD hello world HeLLo WoRLD",
    "Café crème brûlée, naïve façade, jalapeño, Ångström, Œuvre",
    # other scripts
    "北京是中国的首都。東京は日本の首都です。",
    "서울은 한국의 수도입니다",
    "Москва — столица России, а Киев — столица Украины.",
    "القاهرة هي عاصمة مصر",
    "שלום עולם, मेरा नाम है, Γειά σου κόσμε",
    # emoji and symbols
    "I love pizza 🍕🍕🍕 so much 😍👍🏽",
    "👨‍👩‍👧‍👦 🏳️‍🌈 ★☆♥ ©®™ ±×÷ ≤≥≠ ∑∫√",
    # URLs, numbers, code-like text
    "Visit https://www.example.com/path?query=1&b=two#frag or mail me@example.org",
    "Call +1 (555) 123-4567 before 10:30am on 2024-03-15; pay $1,299.99 (15% off) for 3.14159 units",
    "def f(x): return x**2  # squares x; arr[0] = {'key': None}",
    # whitespace and invisible characters
    "tabs\tbetween\twords\nand\nnew lines\r\nand carriage returns",
    "   leading and trailing spaces   ",
    "zero\u200bwidth\u200cjoiner\u200dand\ufeffbom",
    "soft\u00adhyphen in\u00adter\u00adna\u00adtion\u00adal",
    "control\x00chars\x07and\x1bescapes",
    # degenerate inputs
    "",
    " ",
    "\t\n  \r\n",
    "a",
    "?",
    "Pneumonoultramicroscopicsilicovolcanoconiosis" * 3 + "supercalifragilisticexpialidocious",
    "x" * 120,
    # special-token strings written as plain text
    "[CLS] [SEP] [MASK] [PAD] [UNK]",
    "the [MASK] sat on the mat [SEP] and then [CLS]",
    # longer than the 256-token limit: the tail must be cut off exactly as sentence-transformers cuts it
    LONG_PARAGRAPH * 8,
    "word " * 600,
    "é" * 3000,
]
# 100,000 characters: must encode without error (and be cut at 256 tokens)
TEXTS.append(("Supercalifragilistic naïveté " * 3500)[:100_000])

# the token-level check: a padded batch of varied lengths, every real token compared
BATCH = [0, 5, 8, 9, 15, 18, 21, 24, 31]


def versions():
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__, "tokenizers": tokenizers.__version__,
            "numpy": np.__version__}


def minilm():
    st = SentenceTransformer(str(MINILM), device="cpu")
    st.eval()
    emb = st.encode(TEXTS, batch_size=32, convert_to_numpy=True)  # normalised: modules.json has Normalize
    feats = st.preprocess(TEXTS)
    token_ids = [ids[m.bool()].tolist() for ids, m in zip(feats["input_ids"], feats["attention_mask"])]

    model = transformers.AutoModel.from_pretrained(str(MINILM)).eval()
    batch = st.preprocess([TEXTS[i] for i in BATCH])  # padded to the longest in the batch
    batch = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state    # (B, T, 384)
    tensors = {"embeddings": torch.from_numpy(emb)}
    for j, i in enumerate(BATCH):
        n = int(batch["attention_mask"][j].sum())
        tensors[f"hidden.{i}"] = hidden[j, :n].contiguous()  # real tokens only
    save_file(tensors, HERE / "minilm.safetensors")
    meta = {"versions": versions(), "model": "sentence-transformers/all-MiniLM-L6-v2",
            "attn_implementation": model.config._attn_implementation,
            "texts": TEXTS, "token_ids": token_ids, "batch": BATCH,
            "padded_length": int(batch["input_ids"].shape[1])}
    (HERE / "minilm.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"minilm: {len(TEXTS)} texts, batch of {len(BATCH)} padded to {meta['padded_length']} tokens")


def tiny_bert():
    """A random BERT in the bert-base-uncased dialect, and transformers' BertModel outputs on it."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=120, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                                  intermediate_size=80, max_position_embeddings=40, type_vocab_size=3,
                                  layer_norm_eps=1e-7, hidden_act="gelu", hidden_dropout_prob=0.1,
                                  attention_probs_dropout_prob=0.1)
    full = transformers.BertForPreTraining(cfg).eval()  # bert.* encoder + cls.* pre-training heads
    with torch.no_grad():  # default init leaves biases 0 and LayerNorm 1/0: randomise so every tensor matters
        for name, p in full.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    state = {}
    for k, v in full.state_dict().items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        state[k] = v.clone().contiguous()  # clone: the MLM decoder shares storage with the word embeddings
    out = HERE / "tiny_bert"
    out.mkdir(exist_ok=True)
    save_file(state, out / "model.safetensors")
    cfg.save_pretrained(out)

    B, T = 4, 17
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, cfg.vocab_size, (B, T), generator=g)
    token_type_ids = torch.randint(0, cfg.type_vocab_size, (B, T), generator=g)
    lengths = [17, 9, 1, 13]
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        attention_mask[b, :n] = 1
    input_ids[attention_mask == 0] = 0
    with torch.no_grad():
        hidden = full.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
    save_file({"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
               "last_hidden_state": hidden.contiguous()}, out / "golden.safetensors")
    (out / "versions.json").write_text(json.dumps(versions(), indent=1) + "\n")
    print(f"tiny_bert: {len(state)} tensors in the bert-base-uncased dialect, outputs {tuple(hidden.shape)}")
    tiny_bert_gradients(full.bert, cfg, out)


def tiny_bert_gradients(bert, cfg, out):
    """The backward, for a fixed loss: mean-pooled vectors (real tokens only) through a fixed linear head, then
    cross-entropy; dropout off, one segment, padded texts of mixed lengths. Every parameter's gradient, under
    transformers' BertModel names."""
    g = torch.Generator().manual_seed(2)
    lengths, C = [12, 12, 9, 5, 5, 1], 3
    B, T = len(lengths), max(lengths)
    input_ids = torch.randint(1, cfg.vocab_size, (B, T), generator=g)
    attention_mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    input_ids[attention_mask == 0] = 0
    head_w, head_b = torch.randn(C, cfg.hidden_size, generator=g) * 0.3, torch.randn(C, generator=g) * 0.1
    labels = torch.randint(0, C, (B,), generator=g)
    bert.eval().zero_grad()
    hidden = bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state      # (B, T, H)
    m = attention_mask.unsqueeze(-1).float()
    pooled = (hidden * m).sum(1) / m.sum(1)                                                  # (B, H)
    loss = torch.nn.functional.cross_entropy(pooled @ head_w.T + head_b, labels)
    loss.backward()
    grads = {f"grad.{k}": p.grad.contiguous() for k, p in bert.named_parameters() if p.grad is not None}
    save_file({"input_ids": input_ids, "attention_mask": attention_mask, "head_weight": head_w, "head_bias": head_b,
               "labels": labels, "loss": loss.detach().reshape(1), **grads}, out / "gradients.safetensors")
    print(f"tiny_bert gradients: {len(grads)} tensors, loss {loss.item():.6f}")


def small_tokenizer(dest):
    """MiniLM's tokenizer with its vocabulary cut to ~3,600 entries (the first 2,600 ids, which keep every special
    token where it was, plus every '##' + one character piece, so any word still splits): a real WordPiece
    tokenizer whose embedding table stays small enough to commit."""
    tok = json.loads((MINILM / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    keep = [t for t, i in sorted(vocab.items(), key=lambda kv: kv[1]) if i < 2600]
    keep += sorted(t for t, i in vocab.items() if i >= 2600 and t.startswith("##") and len(t) == 3)
    tok["model"]["vocab"] = {t: i for i, t in enumerate(keep)}
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    (dest / "tokenizer_config.json").write_text((MINILM / "tokenizer_config.json").read_text(encoding="utf-8"))
    return len(keep)


def randomise(model):
    # default init leaves biases 0 and LayerNorm 1/0: randomise them so every tensor matters
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def st_dirs():
    """Directories in sentence-transformers' own layout, written by sentence-transformers, and its outputs."""
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    import shutil
    out = HERE / "st"
    shutil.rmtree(out, ignore_errors=True)
    tmp = out / "_bare_bert"
    n_vocab = small_tokenizer(tmp)
    small_tokenizer(out / "distilbert")
    torch.manual_seed(0)
    bert = transformers.BertConfig(vocab_size=n_vocab, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=40, max_position_embeddings=64)
    randomise(transformers.BertModel(bert)).save_pretrained(tmp)
    distil = transformers.DistilBertConfig(vocab_size=n_vocab, dim=16, n_layers=2, n_heads=4, hidden_dim=40,
                                           max_position_embeddings=64)
    randomise(transformers.DistilBertModel(distil)).save_pretrained(out / "distilbert")

    t = Transformer(str(tmp), max_seq_length=48)
    SentenceTransformer(modules=[t, Pooling(t.get_embedding_dimension(), "cls"), Normalize()]).save(
        str(out / "st6_cls_normalize"))
    t = Transformer(str(tmp))  # max_seq_length from tokenizer_config.json, capped at max_position_embeddings
    SentenceTransformer(modules=[t, Pooling(t.get_embedding_dimension(), "max")]).save(str(out / "st6_max"))
    t = Transformer(str(out / "distilbert"), max_seq_length=40)
    SentenceTransformer(modules=[t, Pooling(t.get_embedding_dimension(), "mean"), Normalize()]).save(
        str(out / "st6_distilbert"))
    shutil.rmtree(tmp)

    tensors, meta = {}, {"versions": versions(), "texts": "TEXTS of minilm.json", "dirs": {}}
    for d in ("st6_cls_normalize", "st6_max", "distilbert", "st6_distilbert"):
        st = SentenceTransformer(str(out / d), device="cpu")  # the bare DistilBERT: mean pooling, as ST defaults
        tensors[d] = torch.from_numpy(st.encode(TEXTS, batch_size=8, convert_to_numpy=True))
        meta["dirs"][d] = {"max_seq_length": st.max_seq_length, "modules": [type(m).__name__ for m in st]}
    save_file(tensors, out / "golden.safetensors")
    (out / "golden.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print(f"st: {len(tensors)} directories, vocabulary {n_vocab}: {meta['dirs']}")


PARAPHRASE_SENTENCES = [
    "The cat sits outside", "A man is playing guitar", "I love pasta", "The new movie is awesome",
    "The cat plays in the garden", "A woman watches TV", "The new movie is so great", "Do you like pizza?",
    "A man plays the guitar", "Someone is watching television", "Pasta is what I like best", "The dog runs outside"]


def util_cases():
    from sentence_transformers import util
    g = torch.Generator().manual_seed(3)
    centres = torch.randn(3, 16, generator=g)
    emb = torch.cat([centres[i] + 0.35 * torch.randn(15, 16, generator=g) for i in range(3)]
                    + [torch.randn(15, 16, generator=g)])                               # (60, 16): 3 clusters + noise
    emb = emb[torch.randperm(60, generator=g)]
    queries = emb[:7] + 0.1 * torch.randn(7, 16, generator=g)
    cases = {
        "cos_sim": util.cos_sim(emb[:4], emb[:6]).tolist(),
        "dot_score": util.dot_score(emb[:4], emb[:6]).tolist(),
        "semantic_search": util.semantic_search(queries, emb, query_chunk_size=3, corpus_chunk_size=20, top_k=5),
        "semantic_search_dot": util.semantic_search(queries, emb, top_k=4, score_function=util.dot_score),
        "paraphrase_mining_embeddings": util.paraphrase_mining_embeddings(emb, query_chunk_size=11,
                                                                          corpus_chunk_size=17, max_pairs=40, top_k=4),
        "community_detection": util.community_detection(emb, threshold=0.8, min_community_size=5, batch_size=16),
    }
    st = SentenceTransformer(str(MINILM), device="cpu")
    cases["paraphrase_mining"] = util.paraphrase_mining(st, PARAPHRASE_SENTENCES, top_k=3, max_pairs=10)
    e = st.encode(PARAPHRASE_SENTENCES[:3])
    cases["model_similarity"] = st.similarity(e, e).tolist()
    meta = {"versions": versions(), "embeddings": emb.tolist(), "queries": queries.tolist(),
            "sentences": PARAPHRASE_SENTENCES, "cases": cases}
    (HERE / "util.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print(f"util: {len(cases)} cases; communities {[len(c) for c in cases['community_detection']]}")


def bert_keys():
    model = transformers.AutoModel.from_pretrained(str(MINILM))
    keys = {k: list(v.shape) for k, v in model.state_dict().items()}
    (HERE / "bert_keys.json").write_text(json.dumps({"versions": versions(), "model": "BertModel, all-MiniLM-L6-v2",
                                                     "keys": keys}, indent=1) + "\n", encoding="utf-8")
    print(f"bert_keys: {len(keys)} tensors")


if __name__ == "__main__":
    minilm()
    tiny_bert()
    st_dirs()
    util_cases()
    bert_keys()
