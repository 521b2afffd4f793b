"""Accuracy, loss, parameter norm, correct-class logit; `evaluate` measures a model on train and test."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from circuits.tasks import Dataset


def param_norm(model) -> float:
    """Total L2 norm of all parameters."""
    return torch.sqrt(sum((p.detach().float() ** 2).sum() for p in model.parameters())).item()


def correct_logit(logits, labels) -> torch.Tensor:                 # [n, d_vocab], [n] -> [n]
    return logits.gather(1, labels[:, None])[:, 0]


def split_metrics(logits, labels, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}_loss": F.cross_entropy(logits, labels).item(),
        f"{prefix}_acc": (logits.argmax(-1) == labels).float().mean().item(),
        f"{prefix}_logit": correct_logit(logits, labels).mean().item(),
    }


@torch.no_grad()
def all_logits(model, data: Dataset, chunk: int = 65_536) -> torch.Tensor:
    """Logits of every input of the task, [n, d_vocab]."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(data.tokens[i : i + chunk]) for i in range(0, len(data.tokens), chunk)])
    model.train(was_training)
    return out


def evaluate(model, data: Dataset, extra=()) -> dict[str, float]:
    """Train/test loss, accuracy and mean correct-class logit, parameter norm, and any extra
    metrics: callables (model, data, logits) -> dict."""
    logits = all_logits(model, data)
    row = {**split_metrics(logits[data.train_idx], data.labels[data.train_idx], "train"),
           "param_norm": param_norm(model)}
    if len(data.test_idx):
        row.update(split_metrics(logits[data.test_idx], data.labels[data.test_idx], "test"))
    for fn in extra:
        row.update(fn(model, data, logits))
    return row
