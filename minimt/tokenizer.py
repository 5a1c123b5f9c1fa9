"""Text -> token ids, with the truncation and padding sentence-transformers applies.

The WordPiece tokenizer itself is Hugging Face `tokenizers` reading tokenizer.json; this file only fixes its
settings. That matters: all-MiniLM-L6-v2's tokenizer.json bakes in truncation at 128 and fixed padding to 128,
while sentence-transformers cuts at max_seq_length = 256 and pads to the longest text of each batch.

A very long text is cut before it is tokenized (Tokenizer.head), with exactly the ids of tokenizing it whole and
truncating: whole, a 45 MB line took ~7 GB (~155 bytes a character) to keep 256 tokens of it.
"""
import re
import string

import numpy as np
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer

from minimt.errors import UserError

MAX_TOKENS = 2048  # tokens per batch (texts x longest): 2k-row matmuls run at the GEMM peak, activations stay small
# a text longer than this many characters per kept token is read a window of that size at a time (head). English
# averages ~4.5 characters a WordPiece token, so one window nearly always holds enough; one that holds too few
# only costs another window, never a different result
CHARS_PER_TOKEN = 16
SPACES = re.compile(r"[ \t\n\r]+")  # what every BertNormalizer setting keeps as a space or turns into one
ALNUM = re.compile(r"[A-Za-z0-9]+")  # what every BertNormalizer setting keeps as one character each, never split


class Tokenizer:
    def __init__(self, path, max_seq_length, do_lower_case=False):
        try:
            self.tok = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for a missing or broken file
            raise UserError(f"cannot read tokenizer {path}: {e}; the checkpoint directory needs the "
                            f"tokenizer.json of its model") from None
        # replace whatever tokenizer.json says: cut at max_seq_length (special tokens included), no padding
        # here, because each batch is padded on its own to its longest text (see pad)
        self.set_max_seq_length(max_seq_length)
        self.tok.no_padding()
        self.do_lower_case = do_lower_case
        pad = self.tok.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad
        self.specials = [a.content for a in self.tok.get_added_tokens_decoder().values()]  # [CLS], [MASK], ...
        self.cut_chars = self._cut_chars()

    def set_max_seq_length(self, n):
        self.tok.enable_truncation(max_length=n)
        self.max_seq_length = n

    def encode(self, texts):
        """list[str] -> list of token-id lists, each [CLS] ... [SEP], at most max_seq_length long."""
        if self.do_lower_case:  # sentence_bert_config.json's own switch, on top of the tokenizer's normaliser;
            texts = [t.lower() for t in texts]  # whole texts, before any cut: Python lowers Σ by what follows it
        if self.cut_chars is not None:
            window = CHARS_PER_TOKEN * self.max_seq_length
            texts = [self.head(t) if len(t) > window else t for t in texts]
        return [e.ids for e in self.tok.encode_batch(texts)]

    def head(self, text):
        """A long text -> a short one whose tokens start with text's first max_seq_length - 2 tokens, read a
        window (CHARS_PER_TOKEN chars a kept token) at a time: what encode tokenizes instead of the whole text.

        Why the ids come out exactly the same: this tokenizer maps each character on its own (drop control
        characters, pad CJK with spaces, NFD and drop accents, lowercase), except that NFD sorts runs of combining
        marks, and a space, punctuation or CJK character ends such a run. It then splits words at spaces and
        punctuation, and WordPiece reads each word alone. So at a cut next to a space, ASCII punctuation or a CJK
        character, tokens(a + b) == tokens(a) + tokens(b), if no special token such as [MASK] (matched in the raw
        text, before all that) spans the cut. Between two cuts, a piece with no token can become one space, and a
        piece that is one word of over 100 characters can become its first ~100: either way its tokens stay."""
        keep = self.max_seq_length - self.tok.num_special_tokens_to_add(False)
        window = CHARS_PER_TOKEN * self.max_seq_length
        pieces, n, pos = [], 0, 0
        while n < keep and pos < len(text):
            spaces = SPACES.match(text, pos)
            if spaces:  # no token in it, and faster skipped here than read a window at a time
                pieces.append(" ")
                pos = spaces.end()
                continue
            end = self._cut(text, pos, window)
            piece = self._stand_in(text, pos, end, window) if end - pos > window else text[pos:end]
            k = len(self.tok.encode(piece, add_special_tokens=False).ids)  # cut at max_seq_length: enough to count
            pieces.append(piece if k else " ")  # no token (control characters, say): kept, it only makes head long
            n, pos = n + k, end
        return "".join(pieces)

    def _cut_chars(self):
        """The characters head may cut next to, as a regex; None if the reasoning in head does not hold for this
        tokenizer.json, and then long texts are tokenized whole (the same ids, at ~155 bytes a character)."""
        tok = self.tok
        if not (isinstance(tok.normalizer, BertNormalizer) and isinstance(tok.pre_tokenizer, BertPreTokenizer)
                and isinstance(tok.model, WordPiece)):
            return None
        # _cut checks special tokens in the raw text; a normalized one is matched after normalising, a
        # single_word one looks at its neighbours, and a space in one would be lost when head turns spaces into one
        added = tok.get_added_tokens_decoder().values()
        if any(a.normalized or a.single_word or any(c.isspace() for c in a.content) for a in added):
            return None
        cjk = "\u3400-\u4dbf\u4e00-\u9fff" if tok.normalizer.handle_chinese_chars else ""  # ideographs it pads
        return re.compile("[" + re.escape(" \t\n\r" + string.punctuation) + cjk + "]")

    def _cut(self, text, pos, window):
        """Where the piece of text starting at pos ends: the last cut within window chars, else the first cut
        beyond them (a long stretch with none, such as one giant word), else the end of the text."""
        if len(text) - pos <= window:
            return len(text)
        hi = pos + window
        near = [i for m in self.cut_chars.finditer(text, pos, hi + 1) for i in (m.start(), m.end())]
        for i in reversed(near):  # ascending positions, so the last good one comes first
            if pos < i <= hi and not self._splits_special(text, i):
                return i
        for m in self.cut_chars.finditer(text, hi + 1):
            for i in (m.start(), m.end()):
                if not self._splits_special(text, i):
                    return i
        return len(text)

    def _splits_special(self, text, i):
        """Whether a special token in text starts before position i and ends after it."""
        return any(text.find(s, max(i - len(s) + 1, 0), i + len(s) - 1) != -1 for s in self.specials)

    def _stand_in(self, text, start, end, window):
        """text[start:end], a stretch longer than a window with no cut inside -> a short text with its tokens, or
        the stretch itself. Such a stretch is mostly one giant word (a DNA sequence, a long hex string): WordPiece
        makes a word over max_input_chars_per_word characters one [UNK], however long: then its first characters
        stand for it. The stretch is normalised a window at a time: the pieces hold the same characters as the
        whole (NFD only reorders combining marks), so their lengths add up and none may hold a space or punctuation."""
        normalizer, limit = self.tok.normalizer, self.tok.model.max_input_chars_per_word
        if any(text.find(s, start, end) != -1 for s in self.specials):
            return text[start:end]
        if ALNUM.fullmatch(text, start, end):  # one word as it stands: 45 MB of it checked in ms, not 10 s
            length = end - start
        else:
            length = 0
            for i in range(start, end, window):
                part = normalizer.normalize_str(text[i:min(i + window, end)])
                if part and [w for w, _ in self.tok.pre_tokenizer.pre_tokenize_str(part)] != [part]:
                    return text[start:end]  # more than one word (a non-ASCII space or punctuation)
                length += len(part)
        if length <= limit:  # most of it vanishes (control characters, accents): rare enough to tokenize whole
            return text[start:end]
        longest = max(map(len, self.specials), default=0)
        m = max(limit + 1, longest)  # a special token across the cut at start still sees the text's characters
        while len(normalizer.normalize_str(text[start:min(start + m, end)])) <= limit:
            m *= 2
        short = text[start:min(start + m, end)]
        if self._splits_special(short + text[end:end + longest], len(short)):  # a special token made at the seam
            return text[start:end]
        return short

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
            raise UserError("give max_tokens or batch_size (or both)")
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
