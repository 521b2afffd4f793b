"""Models: `build_model(cfg, d_vocab, n_ctx)` picks one by `cfg.arch`."""
from __future__ import annotations

from torch import nn

from circuits.config import ModelConfig
from circuits.models.mlp import MLP
from circuits.models.recurrent import Recurrent
from circuits.models.transformer import Transformer


def build_model(cfg: ModelConfig, d_vocab: int, n_ctx: int) -> nn.Module:
    if cfg.arch == "transformer":
        return Transformer(cfg, d_vocab, n_ctx)
    if cfg.arch == "mlp":
        return MLP(cfg, d_vocab, n_ctx)
    return Recurrent(cfg, d_vocab, n_ctx)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
