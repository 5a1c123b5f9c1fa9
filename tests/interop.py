"""`make interop`: what minimt exports loads in sentence-transformers and transformers, with the same embeddings.

Runs in .venv-dev (the reference libraries); never part of `make test`. For each export it checks, on STS
benchmark test sentences (none of them in the repo):
  SentenceTransformer(dir).encode                 vs minimt's encode of the same directory
  AutoModel.from_pretrained(dir), mean pooling    vs minimt: no missing, unexpected or mismatched key
and, for the re-exported sentence-transformers directories, that the export still gives what sentence-transformers
computed on the original. Tolerance 1e-5 (float32, as the golden tests).
Exports: all-MiniLM-L6-v2 (SentenceEncoder.save), `make train`'s best checkpoint (`minimt export`), and the
CLS+Normalize, max-pooled and DistilBERT directories that sentence-transformers saved (tests/golden/st/).
Last, a script written with sentence-transformers' names (encode's keywords, model.similarity, util.semantic_search
with chunks, paraphrase_mining, community_detection) runs unchanged on both libraries, and gives the same results.
"""
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer

from minimt import SentenceEncoder
from minimt.io.download import fetch
from minimt.evaluate import read_sts

TOL = 1e-5
ROOT = Path(__file__).resolve().parents[1]
BEST = ROOT / "runs" / "train" / "best"


def hf_embed(path, texts, pooling, normalize, max_len):
    """transformers alone: AutoTokenizer + AutoModel, then the pooling the directory declares."""
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model, info = transformers.AutoModel.from_pretrained(path, output_loading_info=True)
    bad = {k: sorted(v) for k, v in info.items() if k != "error_msgs" and v}
    out = []
    for i in range(0, len(texts), 64):
        b = tok(texts[i:i + 64], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        with torch.no_grad():
            h = model.eval()(**b).last_hidden_state                              # (B, T, H)
        m = b["attention_mask"].unsqueeze(-1).float()                            # (B, T, 1)
        if pooling == "mean":
            v = (h * m).sum(1) / m.sum(1)                                        # (B, H)
        elif pooling == "cls":
            v = h[:, 0]
        else:
            v = h.masked_fill(m == 0, -1e9).amax(1)
        out.append(torch.nn.functional.normalize(v, dim=-1) if normalize else v)
    return torch.cat(out).numpy(), bad


def check(name, export_dir, texts, original=None):
    ours = SentenceEncoder.from_pretrained(export_dir)
    mine = ours.encode(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = SentenceTransformer(str(export_dir), device="cpu").encode(texts, batch_size=64)
    c = ours.config
    hf, bad = hf_embed(str(export_dir), texts, c.pooling, c.normalize, c.max_seq_length)
    rows = [(name, "sentence-transformers", float(np.abs(st - mine).max()), "")]
    keys = str(bad) if bad else "no missing or unexpected key"
    rows.append((name, "transformers AutoModel", float(np.abs(hf - mine).max()), keys))
    if original is not None:
        ref = SentenceTransformer(str(original), device="cpu").encode(texts, batch_size=64)
        rows.append((name, "ST on the original dir", float(np.abs(ref - mine).max()), ""))
    ok = all(d <= TOL for _, _, d, _ in rows) and not bad
    for r in rows:
        print(f"  {r[0]:<26} {r[1]:<24} maxdiff {r[2]:.1e}  {r[3]}".rstrip())
    return ok


def st_script(model, util, sentences):
    """A script written against sentence-transformers, unchanged: only `model` and `util` differ between runs."""
    emb = model.encode(sentences, convert_to_tensor=True, normalize_embeddings=True, batch_size=32)
    hits = util.semantic_search(emb[:20], emb, top_k=5, corpus_chunk_size=97, query_chunk_size=7)
    pairs = util.paraphrase_mining(model, sentences[:200], top_k=5, max_pairs=50)
    communities = util.community_detection(emb, threshold=0.7, min_community_size=3)
    return {"embeddings": emb.cpu(), "similarity": model.similarity(emb[:5], emb[:5]).cpu(),
            "dim": model.get_sentence_embedding_dimension(),
            "hits": [[h["corpus_id"] for h in q] for q in hits], "hit_scores": [[h["score"] for h in q] for q in hits],
            "pairs": [p[1:] for p in pairs], "pair_scores": [p[0] for p in pairs], "communities": communities}


def check_script(texts):
    """The same script on sentence-transformers and on minimt: the same numbers within TOL, the same ids."""
    from sentence_transformers import util as st_util
    from minimt import util as mt_util
    st = st_script(SentenceTransformer(str(fetch("all-MiniLM-L6-v2")), device="cpu"), st_util, texts)
    mt = st_script(SentenceEncoder.from_pretrained("all-MiniLM-L6-v2"), mt_util, texts)
    diffs = {k: float(np.abs(np.asarray(st[k]) - np.asarray(mt[k])).max())
             for k in ("embeddings", "similarity", "hit_scores", "pair_scores")}
    same = {k: st[k] == mt[k] for k in ("dim", "hits", "pairs", "communities")}
    for k, d in diffs.items():
        print(f"  ST names script            {k:<24} maxdiff {d:.1e}")
    print(f"  ST names script            ids, pairs, communities, dim: {'equal' if all(same.values()) else same}")
    return all(d <= TOL for d in diffs.values()) and all(same.values())


def main():
    warnings.simplefilter("ignore", FutureWarning)  # ST 6 renamed get_sentence_embedding_dimension; the script keeps it
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    print(f"sentence-transformers {sentence_transformers.__version__}, transformers {transformers.__version__}, "
          f"torch {torch.__version__}")
    s1, s2, _ = read_sts("test")
    texts = sorted(set(s1 + s2))[:400]
    print(f"{len(texts)} STS benchmark test sentences; tolerance {TOL:g}")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        minilm = fetch("all-MiniLM-L6-v2")
        ok &= check("all-MiniLM-L6-v2 (save)", SentenceEncoder.from_pretrained(minilm).save(tmp / "minilm"), texts,
                    original=minilm)
        if not (BEST / "checkpoint.json").exists():
            sys.exit(f"{BEST} is missing: run `make train` first")
        run = subprocess.run([sys.executable, "-m", "minimt", "export", str(BEST), str(tmp / "trained")],
                             capture_output=True, text=True, check=True)
        print("  $ minimt export runs/train/best ...  ->  " + run.stdout.strip().splitlines()[-1])
        ok &= check("make train's best (export)", tmp / "trained", texts)
        for d in ("st6_cls_normalize", "st6_max", "st6_distilbert"):
            src = ROOT / "tests" / "golden" / "st" / d
            ok &= check(f"{d} (save)", SentenceEncoder.from_pretrained(src).save(tmp / d), texts, original=src)
    ok &= check_script(texts)
    print("interop: all loaded, all within tolerance" if ok else "interop: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
