"""BERT, the encoder: token ids in, one vector per token out.

References: Devlin et al. 2018, "BERT: Pre-training of Deep Bidirectional Transformers" (section 3, figure 2);
Vaswani et al. 2017, "Attention Is All You Need" (section 3.2); the numbers it must reproduce are those of
Hugging Face transformers' BertModel, checked by tests/test_golden.py.

    input_ids (B, T) ──► Embeddings ──► Layer × L ──► last_hidden_state (B, T, H)

    Layer (post-LayerNorm, as in the original BERT):
        x = LayerNorm(x + Dropout(SelfAttention(x)))
        x = LayerNorm(x + Dropout(FeedForward(x)))

B = batch, T = tokens (padded to the longest text in the batch), H = hidden_size, nh = heads, hd = H / nh.
Parameter names here are our own; minimt/weights.py maps the checkpoint's names onto them.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from minimt.config import BertConfig


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

    def forward(self, input_ids, token_type_ids):
        T = input_ids.shape[1]
        if T > self.position.num_embeddings:
            raise ValueError(f"sequence of {T} tokens is longer than max_position_embeddings "
                             f"{self.position.num_embeddings}; truncate the input")
        pos = torch.arange(T, device=input_ids.device)                  # (T,) same positions for every row
        x = self.word(input_ids) + self.position(pos)                   # (B, T, H)
        if self.token_type is not None:
            x = x + self.token_type(token_type_ids)
        return self.drop(self.ln(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention; every token looks at every real (non-padding) token of its own text."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        H = cfg.hidden_size
        self.n_head, self.head_dim = cfg.num_attention_heads, H // cfg.num_attention_heads
        self.query, self.key, self.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.out = nn.Linear(H, H)
        self.p_drop = cfg.attention_probs_dropout_prob
        self.use_sdpa = True  # fused kernel; set False for the manual path below (tests prove both equal)

    def forward(self, x, mask):
        # x: (B, T, H); mask: (B, 1, 1, T) additive, 0 for real tokens and a large negative for padding
        B, T, H = x.shape
        # 1) project, then split H into nh heads of hd each
        q = self.query(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = self.key(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)    # (B, nh, T, hd)
        v = self.value(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        p = self.p_drop if self.training else 0.0
        if self.use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, nh, T, hd)
        else:
            # 2) scores: how much each query token attends to each key token, scaled so softmax stays soft
            att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, nh, T, T)
            # 3) padding keys get -inf-like scores, so softmax gives them weight 0
            att = att + mask                                            # (B, nh, T, T)
            att = F.dropout(att.softmax(dim=-1), p=p, training=self.training)
            # 4) each token's output is the attention-weighted average of the value vectors
            y = att @ v                                                 # (B, nh, T, hd)
        # 5) put the heads side by side again and mix them
        y = y.transpose(1, 2).reshape(B, T, H)                          # (B, T, H)
        return self.out(y)


class FeedForward(nn.Module):
    """Per-token MLP: H -> 4H -> H with the exact (erf) GELU, as BERT's hidden_act "gelu"."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))  # (B, T, 4H) in between; gelu's default is the erf form


class Layer(nn.Module):
    """One transformer block. BERT normalises after each residual add (post-LN), unlike GPT-2's pre-LN."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.ln1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x, mask):
        x = self.ln1(x + self.drop(self.attn(x, mask)))  # (B, T, H)
        x = self.ln2(x + self.drop(self.ffn(x)))         # (B, T, H)
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
            raise ValueError(f"attention {impl!r} is not known; use 'sdpa' or 'manual'")
        for layer in self.layers:
            layer.attn.use_sdpa = impl == "sdpa"

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        # input_ids, attention_mask, token_type_ids: (B, T) integers; attention_mask is 1 for real tokens
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        # additive mask, broadcast over heads and query positions: 0 keeps a key, dtype-min removes it
        # (min rather than -inf, so a row with no real token yields a uniform softmax instead of NaN)
        dtype = x.dtype
        mask = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min  # (B, 1, 1, T)
        for layer in self.layers:
            x = layer(x, mask)
        return x  # last_hidden_state (B, T, H); padding positions hold values that callers must mask out
