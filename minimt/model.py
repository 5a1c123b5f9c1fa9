"""BERT, the encoder: token ids in, one vector per token out.

References: Devlin et al. 2018, "BERT: Pre-training of Deep Bidirectional Transformers" (section 3, figure 2);
Vaswani et al. 2017, "Attention Is All You Need" (section 3.2); the numbers it must reproduce are those of
Hugging Face transformers' BertModel, checked by tests/test_golden.py.

    token ids ──► Embeddings ──► Layer × L ──► one vector per token (last_hidden_state)

    Layer (post-LayerNorm, as in the original BERT):
        x = LayerNorm(x + Dropout(SelfAttention(x)))
        x = LayerNorm(x + Dropout(FeedForward(x)))

This one forward pass serves encoding and training alike, on a batch in either of two layouts:
  padded  input_ids (B, T) + attention_mask: every text padded to the longest; attention masks the padding out.
          The form every BERT tutorial uses, and what transformers' BertModel takes.
  Packed  the texts' real tokens one after another, (N,) with N = the sum of their lengths: no padding at all.
          Everything but attention works on single tokens (embeddings, Linear, LayerNorm, GELU), so it runs on
          the (N, H) rows as they are; attention runs once per run of equal-length texts, a (b, T, H) view that
          needs no mask. Sorted by length (Tokenizer.token_batches), a batch has only a few such runs.
The two give the same numbers within float rounding (~1e-7; tests/test_packed.py); Packed skips the padding's work.

B = batch, T = tokens per text, N = tokens in a packed batch, H = hidden_size, nh = heads, hd = H / nh.
Parameter names here are our own; minimt/weights.py maps the checkpoint's names onto them.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minimt.config import BertConfig
from minimt.errors import UserError


@dataclass
class Packed:
    """A batch of texts without padding. Texts come longest first, so texts of one length are neighbours."""
    input_ids: torch.Tensor  # (N,) every text's token ids, one text after another
    positions: torch.Tensor  # (N,) each token's position in its own text: 0..T-1, 0..T'-1, ...
    runs: list               # [(n_texts, T)]: each run of n_texts texts of T tokens, in row order

    @classmethod
    def from_ids(cls, ids, device=None):
        """Token-id lists, sorted longest first -> Packed."""
        lengths = [len(x) for x in ids]
        if any(a < b for a, b in zip(lengths, lengths[1:])):
            raise UserError("Packed needs its texts sorted longest first (Tokenizer.token_batches sorts them)")
        runs, i = [], 0
        while i < len(lengths):
            j = i
            while j < len(lengths) and lengths[j] == lengths[i]:
                j += 1
            runs.append((j - i, lengths[i]))
            i = j
        input_ids = torch.tensor([t for x in ids for t in x], dtype=torch.long, device=device)    # (N,)
        positions = torch.cat([torch.arange(T, device=device).repeat(b) for b, T in runs])      # (N,)
        return cls(input_ids, positions, runs)


class Embeddings(nn.Module):
    """Each token's vector = its word vector + its position vector + its segment vector, then LayerNorm.
    DistilBERT has no segments (type_vocab_size = 0): the segment term is simply absent."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size) if cfg.type_vocab_size else None
        self.ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids, positions, token_type_ids=None):
        # input_ids, positions, token_type_ids: (B, T) or (N,) -> (B, T, H) or (N, H)
        x = self.word(input_ids) + self.position(positions)
        if self.token_type is not None:
            x = x + (self.token_type(token_type_ids) if token_type_ids is not None else self.token_type.weight[0])
        return self.drop(self.ln(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention; every token looks at every real (non-padding) token of its own text."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        H = cfg.hidden_size
        self.n_head, self.head_dim = cfg.num_attention_heads, H // cfg.num_attention_heads
        self.qkv = nn.Linear(H, 3 * H)  # the query, key and value projections stacked: one matmul for all three
        self.out = nn.Linear(H, H)
        self.p_drop = cfg.attention_probs_dropout_prob
        self.use_sdpa = True  # fused kernel; set False for the manual path in attend (tests prove both equal)
        # a named point for observers (minimt/trace.py): a forward hook on it sees the manual path's (B, nh, T, T)
        # softmax weights, which the fused kernel never materialises. No parameters, nothing computed.
        self.probs = nn.Identity()

    def forward(self, x, mask=None, runs=None):
        """Padded: x (B, T, H) and the (B, 1, 1, T) additive mask (None: every token real). Packed: x (N, H) and the
        batch's runs."""
        # 1) project every token to its query, key and value
        qkv = self.qkv(x)  # (..., 3H): q, k and v side by side
        if runs is None:  # padded
            B, T, H = x.shape
            q, k, v = qkv.chunk(3, dim=-1)                                      # 3 x (B, T, H) views
            y = self.attend(*(self.heads(t, B, T) for t in (q, k, v)), mask)     # (B, nh, T, hd)
            y = y.transpose(1, 2).reshape(B, T, H)                              # (B, T, H)
        else:  # packed: a run's texts all have T tokens, so nothing needs masking
            # split, not one slice per run: a slice's backward writes its gradient into a zero tensor the size of
            # the whole batch; split's backward is one cat
            parts = []
            for (b, T), run in zip(runs, qkv.split([b * T for b, T in runs])):  # run: (b*T, 3H)
                o = self.attend(*(self.heads(t, b, T) for t in run.chunk(3, dim=-1)), None)  # (b, nh, T, hd)
                parts.append(o.transpose(1, 2).reshape(b * T, -1))                        # (b*T, H)
            y = torch.cat(parts)                                                          # (N, H)
        # 5) the heads, side by side again, mixed by one projection
        return self.out(y)

    def heads(self, t, B, T):
        # 2) split H into nh heads of hd each: (B, T, H) or (B*T, H) -> (B, nh, T, hd)
        return t.view(B, T, self.n_head, self.head_dim).transpose(1, 2)

    def attend(self, q, k, v, mask):
        """q, k, v: (B, nh, T, hd); mask: (B, 1, 1, T) additive, or None when every token is real."""
        if self.use_sdpa:  # SDPA has no training flag: its dropout_p must be 0 outside training
            p = self.p_drop if self.training else 0.0
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, nh, T, hd)
        # 3) scores: how much each query token attends to each key token, scaled so softmax stays soft
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, nh, T, T)
        if mask is not None:
            att = att + mask  # padding keys get -inf-like scores, so softmax gives them weight 0
        att = F.dropout(self.probs(att.softmax(dim=-1)), self.p_drop, self.training)
        # 4) each token's output is the attention-weighted average of the value vectors
        return att @ v                                              # (B, nh, T, hd)


class FeedForward(nn.Module):
    """Per-token MLP: H -> 4H -> H with the exact (erf) GELU, as BERT's hidden_act "gelu"."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))  # (..., H) -> (..., 4H) -> (..., H)


class Layer(nn.Module):
    """One transformer block. BERT normalises after each residual add (post-LN), unlike GPT-2's pre-LN."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.ln1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x, mask=None, runs=None):
        x = self.ln1(x + self.drop(self.attn(x, mask, runs)))  # (B, T, H) or (N, H)
        x = self.ln2(x + self.drop(self.ffn(x)))           # same shape
        return x


class BertModel(nn.Module):
    """Embeddings followed by L identical layers. No pooler: sentence pooling lives in minimt/pooling.py."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList([Layer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        # BERT's initialisation (truncated-normal-like N(0, 0.02)); only matters for models trained from scratch
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)

    def set_attention(self, impl):
        """'sdpa' (fused scaled_dot_product_attention) or 'manual' (the readable matmul-softmax-matmul)."""
        if impl not in ("sdpa", "manual"):
            raise UserError(f"attention {impl!r} is not known; use 'sdpa' or 'manual'")
        for layer in self.layers:
            layer.attn.use_sdpa = impl == "sdpa"

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """A Packed batch -> (N, H) token vectors. Or padded (B, T) input_ids -> (B, T, H), with attention_mask
        (B, T), 1 for real tokens (default: every token real), and optional token_type_ids (B, T); the padding
        positions of the output hold values callers must mask out."""
        if isinstance(input_ids, Packed):
            return self.forward_packed(input_ids)
        B, T = input_ids.shape
        self.check_length(T)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids, torch.arange(T, device=input_ids.device), token_type_ids)  # (B, T, H)
        # additive mask, broadcast over heads and query positions: 0 keeps a key, dtype-min removes it
        # (min rather than -inf, so a row with no real token yields a uniform softmax instead of NaN)
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # (B, 1, 1, T)
        for layer in self.layers:
            x = layer(x, mask=mask)  # (B, T, H)
        return x

    def forward_packed(self, batch):
        self.check_length(batch.runs[0][1])              # the longest text comes first
        x = self.embeddings(batch.input_ids, batch.positions)  # (N, H), segment 0 throughout
        for layer in self.layers:
            x = layer(x, runs=batch.runs)                # (N, H)
        return x

    def check_length(self, T):
        if T > self.config.max_position_embeddings:
            raise UserError(f"a text of {T} tokens is longer than max_position_embeddings "
                            f"{self.config.max_position_embeddings}; truncate the input")
