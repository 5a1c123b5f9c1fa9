"""BertConfig: the numbers that define a BERT encoder, plus the sentence-embedding settings.

A checkpoint directory in the sentence-transformers layout carries them in four files:
  config.json                 the transformer (same keys as Hugging Face's BertConfig, or DistilBertConfig)
  sentence_bert_config.json   max_seq_length (and do_lower_case)
  modules.json                the pipeline: Transformer -> Pooling [-> Normalize]
  1_Pooling/config.json       which pooling: the old boolean flags ("pooling_mode_cls_token": true) or, from
                              sentence-transformers 6, one "pooling_mode": "cls"
A plain checkpoint (bert-base-uncased) has only config.json; it then gets what sentence-transformers gives it:
mean pooling, no normalisation, max_seq_length = min(max positions, tokenizer's model_max_length).

DistilBERT (Sanh et al. 2019) is BERT with half the layers, no token-type embeddings and other field names; it
runs through the same model.py, with type_vocab_size = 0 and the names translated here (DISTILBERT_FIELDS).
"""
import json
from dataclasses import dataclass, fields
from pathlib import Path

from minimt.errors import UserError
from minimt.pooling import POOLERS


@dataclass
class BertConfig:
    # defaults are all-MiniLM-L6-v2's (a 6-layer MiniLM distilled from BERT, then trained on 1B sentence pairs)
    vocab_size: int = 30522               # WordPiece vocabulary (bert-base-uncased's)
    hidden_size: int = 384                # width of every token vector (bert-base: 768)
    num_hidden_layers: int = 6            # transformer blocks (bert-base: 12)
    num_attention_heads: int = 12         # heads per block; head dim = 384 / 12 = 32 (bert-base: 768 / 12 = 64)
    intermediate_size: int = 1536         # feed-forward width, 4 x hidden
    max_position_embeddings: int = 512    # learned absolute positions
    type_vocab_size: int = 2              # segment A / segment B; 0 = no segment embeddings (DistilBERT)
    layer_norm_eps: float = 1e-12         # BERT's epsilon (PyTorch's default is 1e-5: it matters at 1e-5 tolerance)
    hidden_dropout_prob: float = 0.1      # dropout after embeddings, attention output and feed-forward
    attention_probs_dropout_prob: float = 0.1  # dropout on the attention weights
    pad_token_id: int = 0
    # sentence-embedding settings (sentence-transformers' modules, not part of BERT itself)
    max_seq_length: int = 256             # tokens per text, [CLS] and [SEP] included; longer texts are cut
    pooling: str = "mean"                 # "mean" | "cls" | "max": how token vectors become one sentence vector
    normalize: bool = True                # L2-normalise the sentence vector (modules.json lists Normalize)
    do_lower_case: bool = False           # sentence-transformers' own lower-casing, before the tokenizer's
    similarity_fn_name: str = "cosine"    # "cosine" | "dot": what model.similarity computes (ST's setting)

    def __post_init__(self):
        check_types(self)
        if self.hidden_size % self.num_attention_heads:
            raise UserError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                            f"{self.num_attention_heads}; each head needs an equal slice")
        if self.pooling not in POOLERS:
            raise UserError(f"pooling {self.pooling!r} is not supported; use one of {', '.join(POOLERS)}")
        if self.similarity_fn_name not in SIMILARITY_FUNCTIONS:
            raise UserError(f"similarity_fn_name {self.similarity_fn_name!r} is not supported; minimt implements "
                            f"{', '.join(SIMILARITY_FUNCTIONS)}")
        if self.max_seq_length > self.max_position_embeddings:
            raise UserError(f"max_seq_length {self.max_seq_length} exceeds max_position_embeddings "
                            f"{self.max_position_embeddings}: there is no position vector past that")

    @classmethod
    def tiny(cls, **overrides):
        """A made-up 2-layer model for fast tests (the numbers are not from any checkpoint)."""
        kw = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=64, type_vocab_size=2, max_seq_length=32)
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def from_dir(cls, path):
        """Read config.json and, when present, the sentence-transformers files next to it."""
        path = Path(path)
        model_dir = transformer_dir(path)
        hf = read_json(model_dir / "config.json")
        _check_supported(hf, model_dir / "config.json")
        if hf.get("model_type") == "distilbert":
            # (sinusoidal_pos_embds only changes how positions are initialised; the checkpoint holds them)
            hf = {DISTILBERT_FIELDS.get(k, k): v for k, v in hf.items()}
            hf.update(type_vocab_size=0, layer_norm_eps=1e-12)  # DistilBERT hard-codes its LayerNorm epsilon
        own = {f.name for f in fields(cls)}
        kw = {k: v for k, v in hf.items() if k in own}  # config.json carries many keys BERT does not use

        st_file = model_dir / "sentence_bert_config.json"
        st = read_json(st_file) if st_file.exists() else {}
        if "max_seq_length" in st:
            kw["max_seq_length"] = st["max_seq_length"]
        else:  # a plain checkpoint, or sentence-transformers 6 (which keeps it in the tokenizer's model_max_length)
            tok_cfg = model_dir / "tokenizer_config.json"
            model_max = read_json(tok_cfg).get("model_max_length", 10**9) if tok_cfg.exists() else 10**9
            kw["max_seq_length"] = min(hf.get("max_position_embeddings", 512), model_max)
        kw["do_lower_case"] = bool(st.get("do_lower_case", False))

        st_cfg = path / "config_sentence_transformers.json"
        if st_cfg.exists():
            kw["similarity_fn_name"] = read_json(st_cfg).get("similarity_fn_name") or "cosine"
        kw["pooling"], kw["normalize"] = "mean", False
        if (path / "modules.json").exists():
            kw["pooling"], kw["normalize"] = _read_modules(path)
        where = f"{model_dir / 'config.json'} (with the sentence-transformers files beside it)"
        try:
            cfg = cls(**kw)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        return cfg


SIMILARITY_FUNCTIONS = ("cosine", "dot")  # minimt.similarity.SIMILARITY computes each
# DistilBertConfig name -> BertConfig name; everything else a DistilBERT config holds has the same meaning
DISTILBERT_FIELDS = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
                     "hidden_dim": "intermediate_size", "activation": "hidden_act", "dropout": "hidden_dropout_prob",
                     "attention_dropout": "attention_probs_dropout_prob"}
# sentence-transformers modules, by class name: the old paths (sentence_transformers.models.Pooling) and the
# sentence-transformers 6 ones (sentence_transformers.sentence_transformer.modules.pooling.Pooling) end alike
MODULES = ("Transformer", "Pooling", "Normalize")
# 1_Pooling/config.json: the old boolean flags and the single "pooling_mode" of sentence-transformers 6
POOLING_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
                 "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                 "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


def read_json(p, fix="a BERT checkpoint directory needs config.json, tokenizer.json and model.safetensors",
              want=dict):
    """A JSON file that must be whole and, unless `want` is None, hold a JSON object ({...}): missing, cut off,
    not UTF-8 or another JSON value, it is an error naming it and `fix`."""
    try:
        with open(p, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{p} is missing; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{p} is not valid JSON ({e}): it was cut off or damaged; {fix}") from None
    if want is not None and not isinstance(obj, want):
        raise UserError(f"{p} holds a JSON {JSON_NAMES.get(type(obj), type(obj).__name__)} where a JSON object "
                        f"{{...}} belongs; {fix}")
    return obj


JSON_NAMES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def check_types(cfg):
    """Every field of the dataclass `cfg` holds its declared type (an int field no bool or string): a config.json
    with "hidden_size": "384" fails here, naming the file, rather than deep inside the model."""
    for f in fields(cfg):
        v, t = getattr(cfg, f.name), f.type
        if t in (int, float) and isinstance(v, bool):
            ok = False  # JSON's true is no number, though Python's bool is an int
        elif t is float:
            ok = isinstance(v, (int, float))  # 0 is as good a dropout as 0.0
        else:
            ok = isinstance(v, t)
        if not ok:
            raise UserError(f"{f.name} is {json.dumps(v)}, which is not a{'n' * (t is int)} {t.__name__}")


def _check_supported(hf, where):
    """Raise on architecture switches this encoder does not implement, rather than run the wrong model."""
    if hf.get("model_type", "bert") not in ("bert", "distilbert"):
        raise UserError(f"{where}: model_type {hf['model_type']!r} is not supported; minimt implements BERT "
                        f"and DistilBERT (model_type 'bert' or 'distilbert') only")
    key = "activation" if "activation" in hf else "hidden_act"  # DistilBERT's name, BERT's name
    if hf.get(key, "gelu") != "gelu":
        raise UserError(f"{where}: {key} {hf[key]!r} is not supported; minimt implements the exact erf GELU "
                        f"('gelu') only")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise UserError(f"{where}: position_embedding_type {hf['position_embedding_type']!r} is not "
                        f"supported; minimt implements learned absolute positions only")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise UserError(f"{where}: decoder / cross-attention BERT is not supported; minimt is an encoder")


def _modules(path):
    """modules.json as [(class name, folder)], every module checked to be one minimt implements."""
    out, f = [], path / "modules.json"
    modules = read_json(f, want=None)
    if not isinstance(modules, list):
        raise UserError(f"{f} holds a JSON {type(modules).__name__}; modules.json is a list of modules, each "
                        f"{{\"idx\", \"name\", \"path\", \"type\"}}")
    for i, m in enumerate(modules):
        if not isinstance(m, dict) or not isinstance(m.get("type"), str) or not isinstance(m.get("path", ""), str):
            raise UserError(f"{f}: module {i} ({json.dumps(m)[:80]}) needs a string \"type\" (e.g. "
                            f"\"sentence_transformers.models.Pooling\") and a string \"path\"")
        kind = m["type"].rsplit(".", 1)[-1]
        if kind not in MODULES:
            raise UserError(f"{path / 'modules.json'} lists a {kind} module ({m['type']}); minimt implements "
                            f"{', '.join(MODULES)} only, so it would compute other vectors than "
                            f"sentence-transformers")
        out.append((kind, path / m.get("path", "")))
    return out


def transformer_dir(path):
    """The folder holding config.json and the weights: the directory itself, or the Transformer module's
    folder where modules.json names one (early sentence-transformers saved it in 0_Transformer/)."""
    path = Path(path)
    if (path / "modules.json").exists():
        return next((folder for kind, folder in _modules(path) if kind == "Transformer"), path)
    return path


def _read_modules(path):
    """(pooling, normalize) from modules.json."""
    pooling, normalize = "mean", False
    for kind, folder in _modules(path):
        if kind == "Pooling":
            pooling = _read_pooling(folder / "config.json")
        elif kind == "Normalize":
            normalize = True
    return pooling, normalize


def _read_pooling(p):
    cfg = read_json(p)
    if "pooling_mode" in cfg:  # sentence-transformers 6: a name, or a list of names to concatenate
        mode = cfg["pooling_mode"]
        chosen = [mode] if isinstance(mode, str) else list(mode)
    else:
        chosen = [name for flag, name in POOLING_FLAGS.items() if cfg.get(flag)]
        chosen += [k for k, v in cfg.items() if k.startswith("pooling_mode_") and k not in POOLING_FLAGS and v]
    if len(chosen) != 1 or chosen[0] not in POOLERS:
        raise UserError(f"{p}: pooling {chosen} is not supported; minimt implements exactly one of "
                        f"{', '.join(POOLERS)} (not weightedmean, lasttoken, mean_sqrt_len_tokens or a concatenation)")
    return chosen[0]
