"""SentenceEncoder: sentences in, fixed-length embeddings out (what sentence-transformers' encode does).

    texts ─► tokenize (cut at max_seq_length) ─► sort by length ─► batches by token budget
          ─► Packed (real tokens only) ─► BERT (model.py) ─► pool per text (B, H) ─► L2-normalise
          ─► back in input order

Sorting is what makes packing pay: texts of similar length share a batch, so a batch holds a few runs of
equal-length texts and no padding at all (model.Packed). The same function trains (multitask.py).
"""
import functools
import sys
import time

import torch
from tqdm import tqdm  # installed with huggingface-hub

from minimt import download
from minimt.config import BertConfig, transformer_dir
from minimt.model import BertModel, Packed
from minimt.pooling import normalize as l2_normalize
from minimt.pooling import pool_packed
from minimt.tokenizer import MAX_TOKENS, Tokenizer
from minimt.weights import load_weights

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # float16: CUDA only
CHUNK = 4096  # texts sorted together; larger pads a little less, smaller holds fewer token lists at once


class SentenceEncoder:
    def __init__(self, model: BertModel, tokenizer: Tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.config = model.config

    @classmethod
    def from_pretrained(cls, name_or_path="all-MiniLM-L6-v2", dtype="float32", attention="sdpa", device="cpu"):
        """A directory (a sentence-transformers or Hugging Face checkpoint, a minimt export, or a training
        checkpoint such as runs/train/best), or a Hub id / name, found or fetched by download.locate."""
        if dtype == "auto":
            dtype, why = auto_dtype(pick_device(device))
            print(f"dtype='auto' -> {dtype}: {why}", file=sys.stderr)
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not supported; use one of {sorted(DTYPES) + ['auto']}")
        if dtype == "float16" and pick_device(device).type != "cuda":
            raise ValueError(f"dtype 'float16' is for CUDA only (device {device!r}): CPUs compute it slowly and "
                             f"without fp32 accumulation; use dtype='bfloat16' there")
        path = download.locate(name_or_path)
        if (path / "checkpoint.json").exists():  # a training checkpoint: its fine-tuned encoder, heads left out
            from minimt.checkpoint import load_encoder
            model, tokenizer = load_encoder(path)
        else:
            cfg = BertConfig.from_dir(path)
            model_dir = transformer_dir(path)
            model = BertModel(cfg)
            load_weights(model, model_dir / "model.safetensors")
            tokenizer = Tokenizer(model_dir / "tokenizer.json", cfg.max_seq_length, cfg.do_lower_case)
        model.set_attention(attention)
        # prepacked weights (model.Linear) pay in bfloat16: ~1.2x at one sentence, ~1.05x on W1; in float32 they
        # measured 0.98-1.00x (tests/bench/README.md), so float32 keeps F.linear, the path the golden tests hold
        model.to(DTYPES[dtype]).set_prepacked(dtype == "bfloat16" and torch.backends.mkldnn.is_available())
        return cls(model.eval(), tokenizer).to(device)  # a model of its own: inference, no dropout

    def save(self, path):
        """Write a standard sentence-transformers directory (minimt/export.py) that sentence-transformers,
        transformers and minimt all load."""
        from minimt.export import save_sentence_transformer
        return save_sentence_transformer(self.model, self.tokenizer, path)

    @property
    def dim(self):
        return self.config.hidden_size

    def get_embedding_dimension(self):
        """The embedding's length (sentence-transformers 6's name; get_sentence_embedding_dimension before it)."""
        return self.dim

    get_sentence_embedding_dimension = get_embedding_dimension

    @property
    def device(self):
        return self.model.embeddings.word.weight.device

    def to(self, device):
        """Move the model to a device ("cpu", "cuda", "cuda:1", "mps", or "auto": the best one present)."""
        self.model.to(pick_device(device))
        return self

    def similarity(self, a, b):
        """The model's similarity function (config_sentence_transformers.json's similarity_fn_name) of two sets
        of embeddings: (N, D) x (M, D) -> (N, M)."""
        from minimt.similarity import SIMILARITY
        return SIMILARITY[self.config.similarity_fn_name](a, b)

    @property
    def max_seq_length(self):
        return self.config.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, n):
        """Cut texts at n tokens from now on (as sentence-transformers' model.max_seq_length = n)."""
        if not 2 <= n <= self.config.max_position_embeddings:
            raise ValueError(f"max_seq_length must be from 2 to {self.config.max_position_embeddings}, got {n}")
        self.config.max_seq_length = n
        self.tokenizer.set_max_seq_length(n)

    @torch.inference_mode()
    def encode(self, sentences, batch_size=None, show_progress_bar=False, convert_to_numpy=True,
               convert_to_tensor=False, normalize_embeddings=False, device=None, precision="float32",
               max_tokens=MAX_TOKENS, normalize=None):
        """str -> (D,) vector; list of str -> (N, D): sentence-transformers' encode, with its keyword names.

        convert_to_tensor: a torch tensor (on the model's device) instead of float32 numpy; convert_to_numpy=False
        and no tensor: a list of (D,) tensors. normalize_embeddings: L2-normalise even if the model has no Normalize
        module; normalize=False (minimt's own): skip the model's Normalize too. device: move the model there first.
        precision: "float32" only (ST's int8/binary quantisations are not implemented). A batch holds at most
        max_tokens tokens (texts x longest) and, if batch_size is given, at most batch_size texts; batching changes
        the speed, never the result beyond float rounding (~1e-7)."""
        single = isinstance(sentences, str)
        texts = check_texts([sentences] if single else sentences)
        if precision != "float32":
            raise ValueError(f"precision={precision!r} is not supported; minimt returns 'float32' embeddings "
                             f"(for bfloat16 compute, load with from_pretrained(..., dtype='bfloat16'))")
        for name, v in (("batch_size", batch_size), ("max_tokens", max_tokens)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
        if normalize is not None and not isinstance(normalize, bool):
            raise ValueError(f"normalize={normalize!r} must be None (the model's setting), True or False")
        show_progress_bar = bool(show_progress_bar) if show_progress_bar is None else show_progress_bar  # ST's None
        for name, v in (("show_progress_bar", show_progress_bar), ("convert_to_numpy", convert_to_numpy),
                        ("convert_to_tensor", convert_to_tensor), ("normalize_embeddings", normalize_embeddings)):
            if not isinstance(v, bool):  # "no" is truthy: a string here would silently mean True
                raise ValueError(f"{name}={v!r} must be True or False")
        if device is not None:
            self.to(device)
        normalize = normalize_embeddings or (self.config.normalize if normalize is None else normalize)

        out = torch.empty(len(texts), self.dim, dtype=torch.float32)
        was_training = self.model.training  # a model shared with training is put back as it was
        if was_training:  # (eval() walks every module: ~0.15 ms, a twentieth of one sentence's encode)
            self.model.eval()
        bar = tqdm(total=len(texts), desc="encode", unit="text", disable=not show_progress_bar)
        try:
            # texts are tokenized and sorted a chunk at a time: memory beyond `out` stays flat for any corpus size
            for c0 in range(0, len(texts), CHUNK):
                ids = self.tokenizer.encode(texts[c0:c0 + CHUNK])
                for idx, batch in self.tokenizer.token_batches(ids, max_tokens, batch_size):
                    emb = self.embed_batch(batch).float()                         # (b, H); bf16 -> fp32 first
                    if normalize:
                        emb = l2_normalize(emb)
                    out[[c0 + i for i in idx]] = emb.cpu()                        # scatter back to input order
                    bar.update(len(idx))
        finally:
            if was_training:
                self.model.train()
            bar.close()

        if convert_to_tensor:
            out = out.to(self.device)
            return out[0] if single else out
        if not convert_to_numpy:
            return list(out) if not single else out[0]
        return out[0].numpy() if single else out.numpy()

    def embed_batch(self, ids):
        """Token-id lists sorted longest first -> pooled (b, H) vectors."""
        return embed_sorted(self.model, ids)


BF16_PAYS = 1.8  # bf16 is worth its rounding where its matmuls run this much faster than fp32's


def auto_dtype(device):
    """(dtype, why) for dtype="auto": bfloat16 where bf16 matmuls run >= BF16_PAYS x float32 on this machine
    (CPUs with AVX512-BF16 or AMX: 2-10x; elsewhere bf16 is emulated and slower), on CUDA where the GPU has bf16;
    otherwise float32. The bf16 quality gate (tests/test_encoder.py) holds either way."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ("bfloat16", "this GPU computes bf16") if ok else ("float32", "this GPU has no bf16")
    if device.type != "cpu":
        return "float32", f"no bf16 check for {device.type}"
    ratio = bf16_speedup()
    verdict = "bfloat16" if ratio >= BF16_PAYS else "float32"
    return verdict, f"bf16 matmuls run {ratio:.1f}x float32's on this CPU (bf16 pays from {BF16_PAYS}x)"


@functools.cache  # once per process: ~0.1 s
def bf16_speedup(tokens=512, H=384, I=1536, reps=5):
    """float32 time / bfloat16 time of an FFN-sized matmul pair on the CPU: the model's shapes, best of `reps`."""
    def best(dtype):
        x, w1, w2 = torch.randn(tokens, H, dtype=dtype), torch.randn(I, H, dtype=dtype), torch.randn(H, I, dtype=dtype)
        times = []
        for _ in range(reps + 1):  # the first call warms up (packing, thread pool)
            t0 = time.perf_counter()
            (x @ w1.t()) @ w2.t()                                         # (tokens, I) then (tokens, H)
            times.append(time.perf_counter() - t0)
        return min(times[1:])
    return best(torch.float32) / best(torch.bfloat16)


def pick_device(device):
    """"auto": cuda if present, else mps, else cpu; anything else as given."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def embed_sorted(bert, ids):
    """Token-id lists sorted longest first -> one pooled vector per text, (b, H): a Packed forward through
    model.py, then the checkpoint's pooling over each text's real tokens. Gradients flow if autograd is on."""
    packed = Packed.from_ids(ids, bert.embeddings.word.weight.device)
    hidden = bert(packed)                                                 # (N, H), N = real tokens in the batch
    return pool_packed(hidden, packed, bert.config.pooling)               # (b, H)


def check_texts(sentences):
    """A string list made of `sentences`, or a TypeError / ValueError naming what is wrong and how to fix it (shared
    by encode, trace and the command line)."""
    if sentences is None:
        raise TypeError("encode() got None; pass a string or a list of strings")
    if isinstance(sentences, (bytes, dict)) or not hasattr(sentences, "__iter__"):
        raise TypeError(f"encode() takes a string or a list of strings, got {type(sentences).__name__}")
    texts = list(sentences)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            hint = " (a nested list? pass a flat list of strings)" if isinstance(t, (list, tuple)) else ""
            raise TypeError(f"sentences[{i}] is {type(t).__name__}, not str{hint}")
        if not t.isascii():
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as e:  # bytes read as text with errors="surrogateescape", e.g. from argv
                raise ValueError(f"sentences[{i}] is not valid Unicode: {t[e.start]!r} at position {e.start} is a "
                                 f"lone surrogate, usually a byte that was not UTF-8; decode the input as UTF-8 "
                                 f"first") from None
    return texts
