"""BertConfig: the numbers that define a BERT encoder, plus the sentence-embedding settings.

A checkpoint directory in the sentence-transformers layout carries them in four files:
  config.json                 the transformer (same keys as Hugging Face's BertConfig)
  sentence_bert_config.json   max_seq_length (and do_lower_case)
  modules.json                the pipeline: Transformer -> Pooling [-> Normalize]
  1_Pooling/config.json       which pooling (mean, cls or max)
A plain BERT checkpoint (bert-base-uncased) has only config.json; it then gets what sentence-transformers
gives it: mean pooling, no normalisation, max_seq_length = min(max positions, tokenizer's model_max_length).
"""
import json
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass
class BertConfig:
    # defaults are all-MiniLM-L6-v2's (a 6-layer MiniLM distilled from BERT, then trained on 1B sentence pairs)
    vocab_size: int = 30522               # WordPiece vocabulary (bert-base-uncased's)
    hidden_size: int = 384                # width of every token vector (bert-base: 768)
    num_hidden_layers: int = 6            # transformer blocks (bert-base: 12)
    num_attention_heads: int = 12         # heads per block; head dim = 384 / 12 = 32 (bert-base: 768 / 12 = 64)
    intermediate_size: int = 1536         # feed-forward width, 4 x hidden
    max_position_embeddings: int = 512    # learned absolute positions
    type_vocab_size: int = 2              # segment A / segment B
    layer_norm_eps: float = 1e-12         # BERT's epsilon (PyTorch's default is 1e-5: it matters at 1e-5 tolerance)
    hidden_dropout_prob: float = 0.1      # dropout after embeddings, attention output and feed-forward
    attention_probs_dropout_prob: float = 0.1  # dropout on the attention weights
    pad_token_id: int = 0
    # sentence-embedding settings (sentence-transformers' modules, not part of BERT itself)
    max_seq_length: int = 256             # tokens per text, [CLS] and [SEP] included; longer texts are cut
    pooling: str = "mean"                 # "mean" | "cls" | "max": how token vectors become one sentence vector
    normalize: bool = True                # L2-normalise the sentence vector (modules.json lists Normalize)
    do_lower_case: bool = False           # sentence-transformers' own lower-casing, before the tokenizer's

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}; each head needs an equal slice")
        if self.pooling not in ("mean", "cls", "max"):
            raise ValueError(f"pooling {self.pooling!r} is not supported; use 'mean', 'cls' or 'max'")
        if self.max_seq_length > self.max_position_embeddings:
            raise ValueError(f"max_seq_length {self.max_seq_length} exceeds max_position_embeddings "
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
        hf = _read_json(path / "config.json")
        _check_supported(hf, path / "config.json")
        own = {f.name for f in fields(cls)}
        kw = {k: v for k, v in hf.items() if k in own}  # config.json carries many keys BERT does not use

        st = _read_json(path / "sentence_bert_config.json") if (path / "sentence_bert_config.json").exists() else {}
        if "max_seq_length" in st:
            kw["max_seq_length"] = st["max_seq_length"]
        else:  # what sentence-transformers does for a plain BERT checkpoint
            tok_cfg = path / "tokenizer_config.json"
            model_max = _read_json(tok_cfg).get("model_max_length", 10**9) if tok_cfg.exists() else 10**9
            kw["max_seq_length"] = min(hf.get("max_position_embeddings", 512), model_max)
        kw["do_lower_case"] = bool(st.get("do_lower_case", False))

        kw["pooling"], kw["normalize"] = "mean", False
        if (path / "modules.json").exists():
            kw["pooling"], kw["normalize"] = _read_modules(path)
        return cls(**kw)


def _read_json(p):
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{p} is missing; a BERT checkpoint directory needs config.json, "
                                f"tokenizer.json and model.safetensors") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not valid JSON: {e}") from None


def _check_supported(hf, where):
    """Raise on architecture switches this encoder does not implement, rather than run the wrong model."""
    if hf.get("model_type", "bert") != "bert":
        raise ValueError(f"{where}: model_type {hf['model_type']!r} is not supported; minimt implements BERT "
                         f"(model_type 'bert') only")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{where}: hidden_act {hf['hidden_act']!r} is not supported; minimt implements the "
                         f"exact erf GELU ('gelu') only")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{where}: position_embedding_type {hf['position_embedding_type']!r} is not "
                         f"supported; minimt implements learned absolute positions only")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise ValueError(f"{where}: decoder / cross-attention BERT is not supported; minimt is an encoder")


def _read_modules(path):
    """(pooling, normalize) from modules.json; any module minimt does not implement is an error."""
    pooling, normalize = "mean", False
    for m in _read_json(path / "modules.json"):
        kind = m["type"].rsplit(".", 1)[-1]
        if kind == "Transformer":
            continue
        elif kind == "Pooling":
            pooling = _read_pooling(path / m["path"] / "config.json")
        elif kind == "Normalize":
            normalize = True
        else:
            raise ValueError(f"{path / 'modules.json'} lists a {kind} module; minimt supports "
                             f"Transformer, Pooling and Normalize only")
    return pooling, normalize


def _read_pooling(p):
    cfg = _read_json(p)
    modes = {"cls": cfg.get("pooling_mode_cls_token", False), "mean": cfg.get("pooling_mode_mean_tokens", False),
             "max": cfg.get("pooling_mode_max_tokens", False)}
    others = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v and
              k not in ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens")]
    chosen = [k for k, v in modes.items() if v]
    if others or len(chosen) != 1:
        raise ValueError(f"{p}: pooling {chosen + others} is not supported; minimt needs exactly one of "
                         f"mean, cls or max")
    return chosen[0]
