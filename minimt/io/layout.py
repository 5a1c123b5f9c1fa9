"""What kind of model directory is this? Decided here, and only here; every loader asks kind().

    checkpoint              a minimt training checkpoint (runs/train/best): checkpoint.json, model.safetensors
                            in minimt's names, tokenizer.json; also one that an interrupted save left only as
                            .<name>.old-<pid> beside the missing path (checkpoint.find reads it); exports alike
    export                  a sentence-transformers directory written by minimt with a MultiTaskModel's heads
                            beside it (heads.json, heads.safetensors)
    sentence-transformers   modules.json: Transformer -> Pooling [-> Normalize] (a Hub snapshot or a saved model)
    transformers            config.json alone: a plain BERT / DistilBERT (bert-base-uncased)
"""
from pathlib import Path

from minimt.io.files import leftovers


def kind(path):
    path = Path(path)
    if not path.exists() and (olds := leftovers(path, "old")):
        # an interrupted write left only the previous copy beside the missing path: checkpoint.find / export.find
        return "checkpoint" if any((d / "checkpoint.json").exists() for d in olds) else kind(olds[-1])
    if (path / "checkpoint.json").exists():
        return "checkpoint"
    if (path / "heads.json").exists():
        return "export"
    if (path / "modules.json").exists():
        return "sentence-transformers"
    if (path / "config.json").exists():
        return "transformers"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no checkpoint directory there; check the path, or give a model name "
                                f"(e.g. all-MiniLM-L6-v2 or sentence-transformers/all-MiniLM-L6-v2)")
    raise FileNotFoundError(f"{path} has no config.json, modules.json or checkpoint.json; is it a BERT "
                            f"checkpoint directory?")


def has_heads(path):
    """A checkpoint or an export: a MultiTaskModel, not only an encoder."""
    return kind(path) in ("checkpoint", "export")
