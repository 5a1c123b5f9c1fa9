"""SentenceEncoder: sentences in, fixed-length embeddings out (what sentence-transformers' encode does).

    texts ─► tokenize (cut at max_seq_length) ─► sort by length ─► batches by token budget
          ─► Packed (real tokens only) ─► BERT (model.py) ─► pool per text (B, H) ─► L2-normalise
          ─► back in input order

Sorting is what makes packing pay: texts of similar length share a batch, so a batch holds a few runs of
equal-length texts and no padding at all (model.Packed). The same function trains (multitask.py).
"""
import contextlib
import functools
import sys

import torch
from tqdm import tqdm  # installed with huggingface-hub

from minimt.config import BertConfig, transformer_dir
from minimt.devices import auto_dtype, check_dtype, pick_device
from minimt.errors import UserError, UserTypeError
from minimt.io import checkpoint, download, export, layout
from minimt.model import BertModel, Packed
from minimt.pooling import normalize as l2_normalize
from minimt.pooling import pool, pool_packed
from minimt.similarity import SIMILARITY
from minimt.tokenizer import MAX_TOKENS, Tokenizer
from minimt.weights import load_weights

CHUNK = 4096  # texts sorted together; larger pads a little less, smaller holds fewer token lists at once


def read_dir(path):
    """(BertModel, Tokenizer) of a model directory that download.locate found and checked."""
    if layout.kind(path) == "checkpoint":  # the fine-tuned encoder in minimt's own names
        model, tokenizer, _, _ = checkpoint.read(path)
        return model, tokenizer
    # a Hugging Face / sentence-transformers directory: config.json + safetensors, renamed (weights.py)
    cfg = BertConfig.from_dir(path)
    model_dir = transformer_dir(path)
    model = BertModel(cfg)
    load_weights(model, model_dir / "model.safetensors")
    return model, Tokenizer(model_dir / "tokenizer.json", cfg.max_seq_length, cfg.do_lower_case)


class SentenceEncoder:
    def __init__(self, model: BertModel, tokenizer: Tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.config = model.config
        self.compiled = None  # compile(): a Compiled embed_padded, used by encode from then on

    @classmethod
    def from_pretrained(cls, name_or_path="all-MiniLM-L6-v2", dtype="float32", attention="sdpa", device="cpu",
                        compile=False):
        """A model directory (sentence-transformers, Hugging Face, a minimt export, or a training checkpoint such
        as runs/train/best, whose heads are left out), or a Hub id / name, found or fetched by download.locate.
        compile=True: encode through torch.compile (see compile())."""
        if not isinstance(compile, bool):
            raise UserError(f"compile={compile!r} must be True or False")
        device = pick_device(device)
        if dtype == "auto":
            dtype, why = auto_dtype(device)
            print(f"dtype='auto' -> {dtype}: {why}", file=sys.stderr)
        torch_dtype = check_dtype(dtype, device)
        model, tokenizer = read_dir(download.locate(name_or_path))
        model.set_attention(attention)
        enc = cls(model.to(device, torch_dtype).eval(), tokenizer)  # a model of its own: inference, no dropout
        return enc.compile() if compile else enc

    def compile(self):
        """Encode through torch.compile from now on: inductor compiles embed_padded, model.py's padded forward and
        the pooling, into fused kernels for this CPU or GPU, the weights frozen into the graph as they are now (so
        train a model of its own, not this one). The first call compiles (tens of seconds); shapes are dynamic, so
        new batch sizes and lengths do not compile again. It pays where the same process encodes many small
        batches (one sentence per call: about half the time); a large corpus gains about a tenth (docs/performance.md).
        If compiling fails (no C++ compiler, say), encode says so in one line and runs eagerly."""
        self.compiled = Compiled(self.model, self.tokenizer, freezing=True)
        return self

    def save(self, path):
        """Write a standard sentence-transformers directory (minimt/io/export.py) that sentence-transformers,
        transformers and minimt all load."""
        return export.save_sentence_transformer(self.model, self.tokenizer, path)

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
        return SIMILARITY[self.config.similarity_fn_name](a, b)

    @property
    def max_seq_length(self):
        return self.config.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, n):
        """Cut texts at n tokens from now on (as sentence-transformers' model.max_seq_length = n)."""
        if not 2 <= n <= self.config.max_position_embeddings:
            raise UserError(f"max_seq_length must be from 2 to {self.config.max_position_embeddings}, got {n}")
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
            raise UserError(f"precision={precision!r} is not supported; minimt returns 'float32' embeddings "
                            f"(for bfloat16 compute, load with from_pretrained(..., dtype='bfloat16'))")
        for name, v in (("batch_size", batch_size), ("max_tokens", max_tokens)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise UserError(f"{name} must be a positive integer or None, got {v!r}")
        if normalize is not None and not isinstance(normalize, bool):
            raise UserError(f"normalize={normalize!r} must be None (the model's setting), True or False")
        show_progress_bar = bool(show_progress_bar) if show_progress_bar is None else show_progress_bar  # ST's None
        for name, v in (("show_progress_bar", show_progress_bar), ("convert_to_numpy", convert_to_numpy),
                        ("convert_to_tensor", convert_to_tensor), ("normalize_embeddings", normalize_embeddings)):
            if not isinstance(v, bool):  # "no" is truthy: a string here would silently mean True
                raise UserError(f"{name}={v!r} must be True or False")
        if device is not None:
            self.to(device)
        normalize = normalize_embeddings or (self.config.normalize if normalize is None else normalize)

        out = torch.empty(len(texts), self.dim, dtype=torch.float32)
        bar = tqdm(total=len(texts), desc="encode", unit="text", disable=not show_progress_bar)
        compiled = self.compiled is not None and self.compiled.fn is not None
        with eval_mode(self.model), bar, onednn_for(self.model, compiled):  # a model shared with training is put back
            # texts are tokenized and sorted a chunk at a time: memory beyond `out` stays flat for any corpus size
            for c0 in range(0, len(texts), CHUNK):
                ids = self.tokenizer.encode(texts[c0:c0 + CHUNK])
                for idx, batch in self.tokenizer.token_batches(ids, max_tokens, batch_size):
                    emb = self.embed_batch(batch).float()                         # (b, H); bf16 -> fp32 first
                    if normalize:
                        emb = l2_normalize(emb)
                    out[[c0 + i for i in idx]] = emb.cpu()                        # scatter back to input order
                    bar.update(len(idx))

        if convert_to_tensor:
            out = out.to(self.device)
            return out[0] if single else out
        if not convert_to_numpy:
            return list(out) if not single else out[0]
        return out[0].numpy() if single else out.numpy()

    def embed_batch(self, ids):
        """Token-id lists sorted longest first -> pooled (b, H) vectors."""
        return self.compiled(ids) if self.compiled is not None else embed_sorted(self.model, ids)


class Compiled:
    """embed_padded through torch.compile (inductor), for a SentenceEncoder or a MultiTaskModel. Shapes are dynamic,
    so new batch sizes and lengths reuse the graph. freezing=True (inference only) folds the weights into the graph
    as constants and lets inductor prepack them; without it the weights stay parameters, and autograd runs through
    the compiled forward and its compiled backward (AOTAutograd). If compiling fails (no C++ compiler, say), it
    says so in one line and the eager packed path runs from then on (fn is None)."""

    def __init__(self, bert, tokenizer, freezing):
        self.bert, self.tokenizer, self.freezing = bert, tokenizer, freezing
        self.fn = torch.compile(functools.partial(embed_padded, bert), dynamic=True)

    def __call__(self, ids):
        """Token-id lists -> pooled (b, H), in the same order."""
        if self.fn is None:
            return embed_sorted(self.bert, ids)
        batch = self.tokenizer.pad(ids)
        device = self.bert.embeddings.word.weight.device
        try:  # freezing is set around the call, not in torch.compile's options: dynamo reads it when it traces (a
            # first call, or a new batch shape), and with the option alone it lifts the weights as graph inputs
            with torch._inductor.config.patch(freezing=self.freezing):
                return self.fn(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        except Exception as e:  # what inductor raises when it cannot build its kernels: BackendCompilerFailed, ...
            print(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                  f"encoding without it", file=sys.stderr)
            self.fn = None
            return embed_sorted(self.bert, ids)


@contextlib.contextmanager
def onednn_for(model, compiled):
    """Float32 on the CPU, eager: oneDNN off while encoding. There it would run only the GELU, no faster than
    PyTorch's own kernel, and it keeps a compiled kernel for each new batch shape: small long-lived blocks between
    the freed activations, which fragment the heap until a 50k-text encode holds 3x the model's memory (1.4x
    without: docs/performance.md). bfloat16 keeps it: its matmuls run in oneDNN. So does the compiled path: inductor
    picks its kernels when it compiles, and registers its weight-packing pass only if oneDNN is on the first time
    it compiles in a process."""
    w = model.embeddings.word.weight
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = was and (compiled or not (w.device.type == "cpu" and w.dtype == torch.float32))
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = was


@contextlib.contextmanager
def eval_mode(model):
    """Run a block in eval mode (no dropout), then put `model` back in the mode it was in: the one place minimt
    switches a model that training shares."""
    was_training = model.training
    if was_training:  # (eval() walks every module: not free at one sentence per call)
        model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


def embed_padded(bert, input_ids, attention_mask):
    """(B, T) token ids and their mask -> pooled (B, H): the padded forward of model.py, what compile() compiles (no
    per-run Python loop, so the compiler sees one graph for every batch shape)."""
    return pool(bert(input_ids, attention_mask), attention_mask, bert.config.pooling)


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
        raise UserTypeError("encode() got None; pass a string or a list of strings")
    if isinstance(sentences, (bytes, dict)) or not hasattr(sentences, "__iter__"):
        raise UserTypeError(f"encode() takes a string or a list of strings, got {type(sentences).__name__}")
    texts = list(sentences)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            hint = " (a nested list? pass a flat list of strings)" if isinstance(t, (list, tuple)) else ""
            raise UserTypeError(f"sentences[{i}] is {type(t).__name__}, not str{hint}")
        if not t.isascii():
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as e:  # bytes read as text with errors="surrogateescape", e.g. from argv
                raise UserError(f"sentences[{i}] is not valid Unicode: {t[e.start]!r} at position {e.start} is a "
                                f"lone surrogate, usually a byte that was not UTF-8; decode the input as UTF-8 "
                                f"first") from None
    return texts
