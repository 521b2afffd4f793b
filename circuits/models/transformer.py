"""Decoder-only transformer of Nanda et al. (2023), the canonical grokking model.

Weight names follow TransformerLens. Defaults: 1 layer, d_model 128, 4 heads of d_head 32,
d_mlp 512, ReLU, no LayerNorm, learned positional embeddings, untied W_E / W_U, every weight
~ N(0, 1/d_model) except W_U ~ N(0, 1/d_vocab), biases 0, logits read at the last position.

`plain` computes every position the straightforward way. `forward` is the fast path: the
last layer only needs the last position's query, MLP and unembedding, and for a 1-layer model
the attention inputs are embeddings of (position, token), so Q, K and V come from tables of
size [n_ctx, d_vocab] instead of per example. Same logits to float rounding (tests/test_models.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from circuits.config import ModelConfig


def _normal(*shape, std):
    return nn.Parameter(torch.randn(*shape) * std)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, h, e, m = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
        s = 1 / math.sqrt(d)
        self.W_Q, self.W_K, self.W_V = _normal(h, d, e, std=s), _normal(h, d, e, std=s), _normal(h, d, e, std=s)
        self.W_O = _normal(h, e, d, std=s)        # [n_heads, d_head, d_model]
        self.W_in = _normal(d, m, std=s)          # [d_model, d_mlp]
        self.b_in = nn.Parameter(torch.zeros(m))
        self.W_out = _normal(m, d, std=s)         # [d_mlp, d_model]
        self.b_out = nn.Parameter(torch.zeros(d))
        self.ln1 = nn.LayerNorm(d) if cfg.layernorm else nn.Identity()
        self.ln2 = nn.LayerNorm(d) if cfg.layernorm else nn.Identity()
        self.act = F.relu if cfg.act == "relu" else F.gelu
        self.scale = 1 / math.sqrt(e)
        self.bag = True   # attention output through embedding_bag (False under torch.vmap: circuits.stack)

    def mlp(self, x):                                              # [..., d_model]
        return self.act(x @ self.W_in + self.b_in) @ self.W_out + self.b_out

    def attend(self, q, k, v, causal: bool):
        # q [b, q_pos, h, e], k/v [b, k_pos, h, e] -> [b, q_pos, d_model]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * self.scale
        if causal:
            n = scores.shape[-1]
            mask = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        z = torch.einsum("bhqk,bkhe->bqhe", scores.softmax(-1), v)
        return torch.einsum("bqhe,hed->bqd", z, self.W_O)

    def forward(self, x):                                          # [b, pos, d_model]
        h = self.ln1(x)
        q, k, v = (torch.einsum("bpd,hde->bphe", h, W) for W in (self.W_Q, self.W_K, self.W_V))
        x = x + self.attend(q, k, v, causal=True)
        return x + self.mlp(self.ln2(x))

    def forward_last(self, x):
        """The residual at the last position only, [b, d_model], from x [b, pos, d_model]."""
        h = self.ln1(x)
        k, v = (torch.einsum("bpd,hde->bphe", h, W) for W in (self.W_K, self.W_V))
        q = torch.einsum("bd,hde->bhe", h[:, -1], self.W_Q)
        x_last = x[:, -1] + self.attend(q[:, None], k, v, causal=False)[:, 0]  # last sees every position
        return x_last + self.mlp(self.ln2(x_last))

    def forward_first_last(self, tables, tokens):
        """As forward_last for the first layer, whose inputs are embeddings of (position, token):
        tables [n_ctx, d_vocab, d_model] of W_E + W_pos, tokens [b, n_ctx]. Attention scores come
        from a table over (key position, key token, query token) and the attention output from a
        table of OV outputs, so nothing of size [b, pos, d_model] is ever built."""
        n_ctx, V, d = tables.shape
        H = self.W_Q.shape[0]
        h = self.ln1(tables)                                                   # [n_ctx, V, d_model]
        q = torch.einsum("vd,hde->vhe", h[-1], self.W_Q)                       # [V_q, H, e], query at last pos
        k = torch.einsum("pvd,hde->pvhe", h, self.W_K)                         # [n_ctx, V_k, H, e]
        S = torch.einsum("qhe,pvhe->pvqh", q, k) * self.scale                  # [n_ctx, V_k, V_q, H]
        OV = torch.einsum("pvd,hde,hef->pvhf", h, self.W_V, self.W_O)          # [n_ctx, V, H, d_model]
        pos = torch.arange(n_ctx, device=tokens.device)
        t_last = tokens[:, -1]                                                  # [b]
        pv = pos * V + tokens                                                   # [b, n_ctx] flat (pos, token)
        scores = F.embedding(pv * V + t_last[:, None], S.reshape(-1, H))       # [b, n_ctx, H]
        pattern = scores.softmax(1)                                             # over key positions
        if self.bag:  # fastest on a CPU; torch.vmap has no batching rule for it
            ov_idx = pv[:, :, None] * H + torch.arange(H, device=tokens.device)     # [b, n_ctx, H]
            attn_out = F.embedding_bag(ov_idx.flatten(1), OV.reshape(-1, d), mode="sum",
                                       per_sample_weights=pattern.flatten(1))       # [b, d_model]
        else:
            ov = F.embedding(pv, OV.reshape(n_ctx * V, H * d)).view(*pv.shape, H, d)  # [b, n_ctx, H, d_model]
            attn_out = torch.einsum("bph,bphd->bd", pattern, ov)
        x_last = F.embedding(t_last, tables[-1]) + attn_out                     # [b, d_model]
        return x_last + self.mlp(self.ln2(x_last))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, d_vocab: int, n_ctx: int):
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.W_E = _normal(d_vocab, d, std=1 / math.sqrt(d))     # [d_vocab, d_model]
        self.W_pos = _normal(n_ctx, d, std=1 / math.sqrt(d))     # [n_ctx, d_model]
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(d) if cfg.layernorm else nn.Identity()
        self.W_U = _normal(d, d_vocab, std=1 / math.sqrt(d_vocab))  # [d_model, d_vocab]

    def plain(self, tokens):
        """Logits at every position, [b, pos, d_vocab], computed the straightforward way."""
        x = self.W_E[tokens] + self.W_pos                          # [b, pos, d_model]
        for block in self.blocks:
            x = block(x)
        return self.ln_final(x) @ self.W_U

    def forward(self, tokens):
        """Logits at the last position, [b, d_vocab]."""
        if not self.cfg.fast:
            return self.plain(tokens)[:, -1]
        *early, last = self.blocks
        if early:
            x = self.W_E[tokens] + self.W_pos
            for block in early:
                x = block(x)
            x_last = last.forward_last(x)
        else:
            tables = self.W_E[None] + self.W_pos[:, None]          # [n_ctx, d_vocab, d_model]
            x_last = last.forward_first_last(tables, tokens)
        return self.ln_final(x_last) @ self.W_U
