"""Text -> token ids, with the truncation and padding sentence-transformers applies.

The WordPiece tokenizer itself is Hugging Face `tokenizers` reading tokenizer.json; this file only fixes its
settings. That matters: all-MiniLM-L6-v2's tokenizer.json bakes in truncation at 128 and fixed padding to 128,
while sentence-transformers cuts at max_seq_length = 256 and pads to the longest text of each batch.
"""
import numpy as np
import torch
from tokenizers import Tokenizer as HFTokenizer

MAX_TOKENS = 4096  # tokens per batch (texts x longest): matmuls of ~4k rows ran at the CPU's GEMM peak (make bench)


class Tokenizer:
    def __init__(self, path, max_seq_length, do_lower_case=False):
        try:
            self.tok = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for a missing or broken file
            raise ValueError(f"cannot read tokenizer {path}: {e}; the checkpoint directory needs the "
                             f"tokenizer.json of its model") from None
        # replace whatever tokenizer.json says: cut at max_seq_length (special tokens included), no padding
        # here, because each batch is padded on its own to its longest text (see pad)
        self.set_max_seq_length(max_seq_length)
        self.tok.no_padding()
        self.do_lower_case = do_lower_case
        pad = self.tok.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad

    def set_max_seq_length(self, n):
        self.tok.enable_truncation(max_length=n)
        self.max_seq_length = n

    def encode(self, texts):
        """list[str] -> list of token-id lists, each [CLS] ... [SEP], at most max_seq_length long."""
        if self.do_lower_case:  # sentence_bert_config.json's own switch, on top of the tokenizer's normaliser
            texts = [t.lower() for t in texts]
        return [e.ids for e in self.tok.encode_batch(texts)]

    def pad(self, ids):
        """list of token-id lists -> dict of (B, T) int64 tensors, T = longest in this batch."""
        B, T = len(ids), max(len(x) for x in ids)
        input_ids = np.full((B, T), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((B, T), dtype=np.int64)
        for b, x in enumerate(ids):
            input_ids[b, :len(x)] = x
            attention_mask[b, :len(x)] = 1
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask),
                "token_type_ids": torch.zeros(B, T, dtype=torch.int64)}  # one segment: all type 0

    @staticmethod
    def token_batches(ids, max_tokens=MAX_TOKENS, batch_size=None):
        """(indices, token-id lists) pairs, longest first: similar lengths share a batch, and the caller scatters
        each batch's results back to its indices. A batch grows while (texts x its longest text) stays
        within max_tokens and it has at most batch_size texts (None: no such limit). A token budget keeps every
        matmul about the same size whether the texts are 10 or 250 tokens long."""
        if max_tokens is None and batch_size is None:
            raise ValueError("give max_tokens or batch_size (or both)")
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        start = 0
        while start < len(order):
            longest = max(len(ids[order[start]]), 1)
            n = len(order) - start
            if max_tokens is not None:
                n = min(n, max(1, max_tokens // longest))  # a text longer than the budget still gets a batch
            if batch_size is not None:
                n = min(n, batch_size)
            idx = order[start:start + n]
            yield idx, [ids[i] for i in idx]
            start += n

    def __call__(self, texts):
        return self.pad(self.encode(texts))
