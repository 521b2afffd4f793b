"""Models: `build_model(cfg, d_vocab, n_ctx)` picks one by `cfg.arch`."""
from __future__ import annotations

import torch
from torch import nn

from circuits.config import ModelConfig
from circuits.models.mlp import MLP
from circuits.models.recurrent import Recurrent
from circuits.models.transformer import Transformer


def build_model(cfg: ModelConfig, d_vocab: int, n_ctx: int) -> nn.Module:
    """The model of cfg, initialised in float32 and then cast to cfg.dtype (so a float64 model starts
    from the same weights as the float32 one)."""
    if cfg.arch == "transformer":
        model = Transformer(cfg, d_vocab, n_ctx)
    elif cfg.arch == "mlp":
        model = MLP(cfg, d_vocab, n_ctx)
    else:
        model = Recurrent(cfg, d_vocab, n_ctx)
    return model.to(getattr(torch, cfg.dtype))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
