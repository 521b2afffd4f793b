"""Recurrent models: token embedding -> RNN / LSTM / GRU (optionally bidirectional) -> W_U.

The logits are read from the last layer's final hidden state (both directions, concatenated).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from circuits.config import ModelConfig

CELLS = {"rnn": nn.RNN, "birnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class Recurrent(nn.Module):
    def __init__(self, cfg: ModelConfig, d_vocab: int, n_ctx: int):
        super().__init__()
        bidirectional = cfg.bidirectional or cfg.arch == "birnn"
        self.W_E = nn.Parameter(torch.randn(d_vocab, cfg.d_model) / math.sqrt(cfg.d_model))  # [d_vocab, d_model]
        self.rnn = CELLS[cfg.arch](cfg.d_model, cfg.hidden, cfg.rnn_layers, batch_first=True,
                                   bidirectional=bidirectional, dropout=cfg.dropout if cfg.rnn_layers > 1 else 0.0)
        dirs = 2 if bidirectional else 1
        self.W_U = nn.Parameter(torch.randn(dirs * cfg.hidden, d_vocab) / math.sqrt(dirs * cfg.hidden))
        self.b_U = nn.Parameter(torch.zeros(d_vocab))
        self.dirs = dirs

    def forward(self, tokens):                                       # [b, n_ctx] -> [b, d_vocab]
        _, h_n = self.rnn(self.W_E[tokens])                          # h_n [layers * dirs, b, hidden]
        if isinstance(h_n, tuple):                                   # LSTM: (h_n, c_n)
            h_n = h_n[0]
        h = torch.cat(list(h_n[-self.dirs:]), dim=-1)                # [b, dirs * hidden]
        return h @ self.W_U + self.b_U
