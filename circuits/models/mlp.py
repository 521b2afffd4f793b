"""MLP on concatenated token embeddings: [W_E[x]; W_E[y]; ...] -> mlp_depth x (d_mlp, act) -> W_U.

Fast path: the first layer of a concatenation is a sum over positions of W_E[t_j] @ W_in[j], so it
is read from a table [n_ctx, d_vocab, d_mlp] (exact to float rounding; tests/test_models.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from circuits.config import ModelConfig


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, d_vocab: int, n_ctx: int):
        super().__init__()
        d, m = cfg.d_model, cfg.d_mlp
        self.cfg, self.n_ctx = cfg, n_ctx
        self.W_E = nn.Parameter(torch.randn(d_vocab, d) / math.sqrt(d))            # [d_vocab, d_model]
        self.W_in = nn.Parameter(torch.randn(n_ctx * d, m) / math.sqrt(n_ctx * d))  # [n_ctx * d_model, d_mlp]
        self.b_in = nn.Parameter(torch.zeros(m))
        self.W_hidden = nn.ParameterList(nn.Parameter(torch.randn(m, m) / math.sqrt(m)) for _ in range(cfg.mlp_depth - 1))
        self.b_hidden = nn.ParameterList(nn.Parameter(torch.zeros(m)) for _ in range(cfg.mlp_depth - 1))
        self.W_U = nn.Parameter(torch.randn(m, d_vocab) / math.sqrt(m))            # [d_mlp, d_vocab]
        self.b_U = nn.Parameter(torch.zeros(d_vocab))
        self.act = F.relu if cfg.act == "relu" else F.gelu
        self.drop = nn.Dropout(cfg.dropout)
        self.bag = True

    def first_layer(self, tokens):                                   # [b, n_ctx] -> [b, d_mlp]
        if not self.cfg.fast:
            return self.W_E[tokens].flatten(1) @ self.W_in + self.b_in  # [b, n_ctx * d_model] @ W_in
        W_in = self.W_in.view(self.n_ctx, -1, self.W_in.shape[1])    # [n_ctx, d_model, d_mlp]
        table = torch.einsum("vd,pdm->pvm", self.W_E, W_in)          # [n_ctx, d_vocab, d_mlp]
        pos = torch.arange(self.n_ctx, device=tokens.device)
        if self.bag:  # gather-and-sum in one op; torch.vmap has no batching rule for it (circuits.stack)
            return F.embedding_bag(pos * table.shape[1] + tokens, table.flatten(0, 1), mode="sum") + self.b_in
        return table[pos, tokens].sum(1) + self.b_in

    def forward(self, tokens):                                       # [b, n_ctx] -> [b, d_vocab]
        h = self.drop(self.act(self.first_layer(tokens)))
        for W, b in zip(self.W_hidden, self.b_hidden):
            h = self.drop(self.act(h @ W + b))
        return h @ self.W_U + self.b_U
