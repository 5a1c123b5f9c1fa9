"""A minimt model leaves as a standard sentence-transformers directory, loadable by sentence-transformers
(SentenceTransformer(dir)), by transformers (AutoModel.from_pretrained(dir)) and by minimt itself:

    config.json                        transformers' BertConfig, model_type "bert"
    model.safetensors                  the encoder in transformers' BertModel names (weights.checkpoint_tensors)
    tokenizer.json                     the tokenizer; tokenizer_config.json says how to build it (BertTokenizer)
    modules.json                       the pipeline: Transformer -> Pooling [-> Normalize]
    sentence_bert_config.json          max_seq_length and do_lower_case
    1_Pooling/config.json              the pooling mode (the boolean flags every sentence-transformers version reads)
    2_Normalize/                       only when the model L2-normalises
    config_sentence_transformers.json  the similarity function: cosine
    heads.safetensors, heads.json      a MultiTaskModel's task heads and their label names (others ignore them);
                                       heads.json records the sha256 of the label lists
    export.json                        written last: minimt's record of the sha256 of every file above, which
                                       minimt checks on every load (sentence-transformers and transformers ignore it)

Two tensors are written that minimt does not use, so that transformers finds every key it expects:
  pooler.dense      BertModel's pooler (tanh(W h_CLS + b)), never used by a sentence encoder; written as W = I, b = 0
  token_type        a DistilBERT has no segment table; BERT gets one row of zeros, which adds nothing to type 0
The directory is written atomically (files.fresh_dir / publish): readers see the old one or the new one.
export.json also marks the directory as minimt's own: check_target lets a new export replace a previous export
and nothing else (a folder of other files, the input itself, a run holding it), and recover() cleans up after an
export that was killed.
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from minimt.config import read_json
from minimt.errors import UserError
from minimt.io import files
from minimt.io.checkpoint import REDO, check_heads, checked_file, labels_sha256, versions
from minimt.io.files import fresh_dir, publish, sha256_of, write_json
from minimt.weights import checkpoint_tensors, read_tensors

MODULE_TYPES = {"Transformer": "sentence_transformers.models.Transformer",  # the paths every version resolves
                "Pooling": "sentence_transformers.models.Pooling",
                "Normalize": "sentence_transformers.models.Normalize"}
SPECIAL = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
           "mask_token": "[MASK]"}
RECORD = "export.json"
OVERWRITE = "--overwrite"  # the flag that lets an export replace what is not a previous export


def bert_config(cfg):
    """minimt's BertConfig -> the config.json transformers' BertModel is built from."""
    return {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads, "intermediate_size": cfg.intermediate_size,
            "hidden_act": "gelu", "hidden_dropout_prob": cfg.hidden_dropout_prob,
            "attention_probs_dropout_prob": cfg.attention_probs_dropout_prob,
            "max_position_embeddings": cfg.max_position_embeddings, "type_vocab_size": max(cfg.type_vocab_size, 1),
            "layer_norm_eps": cfg.layer_norm_eps, "pad_token_id": cfg.pad_token_id,
            "position_embedding_type": "absolute", "initializer_range": 0.02}


def bert_state(model):
    """minimt's tensors under transformers' BertModel names, plus the two it does not use (see the docstring)."""
    cfg = model.config
    state = {k: v.detach().float().contiguous() for k, v in checkpoint_tensors(model.state_dict()).items()}
    if cfg.type_vocab_size == 0:
        state["embeddings.token_type_embeddings.weight"] = torch.zeros(1, cfg.hidden_size)
    state["pooler.dense.weight"] = torch.eye(cfg.hidden_size)
    state["pooler.dense.bias"] = torch.zeros(cfg.hidden_size)
    return state


def tokenizer_config(tokenizer, max_seq_length):
    """tokenizer_config.json for transformers: its BertTokenizer options, read off tokenizer.json's normaliser."""
    norm = json.loads(tokenizer.tok.to_str()).get("normalizer") or {}
    if norm.get("type") != "BertNormalizer":
        raise UserError(f"the tokenizer's normaliser is {norm.get('type')!r}, not BertNormalizer; minimt exports "
                        f"BERT WordPiece tokenizers only")
    for token in SPECIAL.values():
        if tokenizer.tok.token_to_id(token) is None:
            raise UserError(f"the tokenizer has no {token} token; minimt exports BERT WordPiece tokenizers only")
    return {"tokenizer_class": "BertTokenizer", "do_lower_case": norm.get("lowercase", True),
            "strip_accents": norm.get("strip_accents"),
            "tokenize_chinese_chars": norm.get("handle_chinese_chars", True),
            "model_max_length": max_seq_length, **SPECIAL}


def save_sentence_transformer(bert, tokenizer, path, multitask=None):
    """Write `bert` (a minimt BertModel) and its Tokenizer as a sentence-transformers directory at `path`;
    with `multitask` (a MultiTaskModel around the same encoder), its heads too."""
    cfg, path = bert.config, Path(path)
    for message in recover(path):  # a killed export's leftovers; its previous export back in place, if lost
        print(message)
    tmp = fresh_dir(path)
    (tmp / "1_Pooling").mkdir()
    save_file(bert_state(bert), tmp / "model.safetensors", metadata={"format": "pt"})
    write_json(tmp / "config.json", bert_config(cfg))
    tokenizer.tok.save(str(tmp / "tokenizer.json"))
    write_json(tmp / "tokenizer_config.json", tokenizer_config(tokenizer, cfg.max_seq_length))
    write_json(tmp / "sentence_bert_config.json", {"max_seq_length": cfg.max_seq_length,
                                                   "do_lower_case": cfg.do_lower_case})
    write_json(tmp / "1_Pooling" / "config.json", {
        "word_embedding_dimension": cfg.hidden_size, "pooling_mode_cls_token": cfg.pooling == "cls",
        "pooling_mode_mean_tokens": cfg.pooling == "mean", "pooling_mode_max_tokens": cfg.pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False})
    modules = [("Transformer", ""), ("Pooling", "1_Pooling")] + [("Normalize", "2_Normalize")] * cfg.normalize
    if cfg.normalize:
        (tmp / "2_Normalize").mkdir()
    write_json(tmp / "modules.json", [{"idx": i, "name": str(i), "path": folder, "type": MODULE_TYPES[kind]}
                                      for i, (kind, folder) in enumerate(modules)])
    write_json(tmp / "config_sentence_transformers.json", {"similarity_fn_name": cfg.similarity_fn_name, "prompts": {},
                                                           "default_prompt_name": None})
    if multitask is not None:
        save_file({k: v.detach().float().contiguous() for k, v in multitask.heads.state_dict().items()},
                  tmp / "heads.safetensors")
        write_json(tmp / "heads.json", {"tasks": multitask.tasks, "head": multitask.head_kind,
                                        "dropout": multitask.dropout, "labels_sha256": labels_sha256(multitask.tasks)})
    written = sorted(f.relative_to(tmp).as_posix() for f in tmp.rglob("*") if f.is_file())
    write_json(tmp / RECORD, {"written_by": "minimt export", "versions": versions(),
                              "sha256": {name: sha256_of(tmp / name) for name in written}})
    return publish(tmp, path)


def is_export(path):
    return (Path(path) / RECORD).is_file()


def check(path, names=None):
    """Check the files `names` (default: every file) of the export at `path` against the sha256 export.json records:
    a changed file is an error naming it. Returns export.json."""
    path = Path(path)
    meta = read_json(path / RECORD, REDO)
    for name in meta["sha256"] if names is None else names:
        checked_file(path, meta, name, RECORD)
    return meta


def rank(d):
    """How recover() chooses among the copies an interrupted export left: an intact one, the newest first."""
    check(d)
    return (d / RECORD).stat().st_mtime_ns


def find(path):
    """The previous export an export to the missing `path` left when it was killed between its two renames."""
    best, _, rejected = files.newest_intact(files.leftovers(path, "old"), rank)
    if best is None:
        damaged = "".join(f"; {d} is damaged: {why}" for d, why in rejected.items())
        raise FileNotFoundError(f"no export at {path}{damaged}; export it again")
    print(f"{path} is missing: an export was interrupted; using the previous export {best}", file=sys.stderr)
    return best


def recover(path):
    """Clean up after exports to `path` that were killed (files.recover)."""
    return files.recover(path, rank, "export")


def check_target(out, src, overwrite=False):
    """Refuse, before any work, an export to `out` that would destroy what the command was not asked to replace:
    the input itself or a folder holding it (always), a file, or a non-empty folder that is not a previous export
    (unless `overwrite`). A previous export may hold nothing but its own files: export replaces it whole."""
    out = Path(out)
    files.check_not_input(out, [src], "OUT_DIR", folders=True)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        if overwrite:
            return
        raise UserError(f"{out} is a file, and export writes a directory: choose another OUT_DIR, or give "
                        f"{OVERWRITE} to replace the file")
    if not out.is_dir() or not any(out.iterdir()) or overwrite:
        return
    if not is_export(out):
        raise UserError(f"{out} is a folder that is not a minimt export (it holds "
                        f"{files.some(sorted(p.name for p in out.iterdir()))}): export replaces only a "
                        f"previous export; choose a new or empty OUT_DIR, or give {OVERWRITE} to replace it")
    ours = {Path(name).parts[0] for name in read_json(out / RECORD, REDO).get("sha256", {})} | {RECORD}
    # an empty folder (2_Normalize) holds nothing to lose
    extra = sorted(p.name for p in out.iterdir() if p.name not in ours and not (p.is_dir() and not any(p.iterdir())))
    if extra:
        raise UserError(f"{out} is a previous export, but {files.some(extra)} in it "
                        f"came from elsewhere and would be deleted: move that out, or give {OVERWRITE}")


def read_heads(path):
    """(heads.json, the head tensors by name) of an exported directory, after checking both files against the
    sha256 export.json records and each head's output count against its label list.
    MultiTaskModel.from_checkpoint builds the model from them."""
    path = Path(path)
    check(path, ["heads.json", "heads.safetensors"])
    meta = read_json(path / "heads.json", REDO)
    heads = read_tensors(path / "heads.safetensors", REDO)
    outputs = {k.split(".")[0]: len(v) for k, v in heads.items() if k.endswith(".out.weight")}
    check_heads(meta["tasks"], outputs, meta["labels_sha256"], path / "heads.json", path / "heads.safetensors")
    return meta, heads
