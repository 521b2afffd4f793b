"""Accuracy, loss, parameter norm, correct-class logit; `evaluate` measures a model on train and test.

Evaluation runs over all inputs in chunks of `tasks.EVAL_CHUNK` (65,536) and keeps only sums, so
a large task (p = 1009: a million inputs, a thousand classes) never holds all its logits at once.
An extra metric that can be summed chunk by chunk says so with an `accumulator` attribute
(`fourier.strength_metrics`); any other is handed all logits, as before.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from circuits.tasks import EVAL_CHUNK, Dataset


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


def logit_chunks(model, data: Dataset, chunk: int | None = None):
    """Yields (start, logits of inputs start..start + len), [len, d_vocab], over all inputs in order,
    chunk (default EVAL_CHUNK) at a time: the model in eval mode, without gradients."""
    chunk = chunk or EVAL_CHUNK
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(data.tokens), chunk):
            with torch.no_grad():
                out = model(data.tokens[i : i + chunk])
            yield i, out
    finally:
        model.train(was_training)


def all_logits(model, data: Dataset, chunk: int | None = None) -> torch.Tensor:
    """Logits of every input of the task, [n, d_vocab] (all at once: for small tasks and analyses)."""
    return torch.cat([out for _, out in logit_chunks(model, data, chunk)])


def accumulator_of(fn, model, data: Dataset):
    """The chunk accumulator of an extra metric (fn.accumulator(model, data, *args, **kw), also through
    functools.partial), or None where it has none: it takes add(start, logits) and gives result()."""
    base, args, kw = fn, (), {}
    if isinstance(fn, functools.partial):
        base, args, kw = fn.func, fn.args, fn.keywords
    make = getattr(base, "accumulator", None)
    return make(model, data, *args, **kw) if make is not None else None


def evaluate(model, data: Dataset, extra=(), chunk: int | None = None) -> dict[str, float]:
    """Train/test loss, accuracy and mean correct-class logit, parameter norm, and any extra
    metrics: callables (model, data, logits) -> dict. Computed chunk by chunk (`logit_chunks`):
    per-input losses, hits and correct logits are summed in float64, weighted by how often each
    input is in train_idx / test_idx."""
    n = len(data.tokens)
    splits = {"train": data.train_idx} if not len(data.test_idx) else {"train": data.train_idx, "test": data.test_idx}
    weights = {s: torch.bincount(idx, minlength=n).double() for s, idx in splits.items()}   # [n] each
    sums = {s: torch.zeros(3, dtype=torch.float64, device=data.tokens.device) for s in splits}
    accs = [accumulator_of(fn, model, data) for fn in extra]
    kept = None if all(a is not None for a in accs) else []          # whole logits, for extras without one
    for start, logits in logit_chunks(model, data, chunk):
        labels = data.labels[start : start + len(logits)]
        per_input = torch.stack([F.cross_entropy(logits, labels, reduction="none").double(),
                                 (logits.argmax(-1) == labels).double(),
                                 correct_logit(logits, labels).double()])     # [3, len]
        for s, w in weights.items():
            sums[s] += per_input @ w[start : start + len(logits)]
        for a in accs:
            if a is not None:
                a.add(start, logits)
        if kept is not None:
            kept.append(logits)
    row = {}
    for s in splits:
        loss, acc, logit = (sums[s] / weights[s].sum()).tolist()
        row.update({f"{s}_loss": loss, f"{s}_acc": acc, f"{s}_logit": logit})
        if s == "train":
            row["param_norm"] = param_norm(model)
    full = torch.cat(kept) if kept else None
    for fn, a in zip(extra, accs):
        row.update(a.result() if a is not None else fn(model, data, full))
    return row
