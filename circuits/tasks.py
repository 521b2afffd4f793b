"""Modular-arithmetic datasets: (x op y) mod p, K-operand addition, token layouts, splits, subsets.

Tokens: the numbers 0..p-1 are their own ids; then the operator token (layout `xopy=`) and the `=`
token. Logits range over the whole vocabulary (Nanda et al.: the `=` class included).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from circuits.config import ModelConfig, TaskConfig
from circuits.errors import CircuitsError

MAX_INPUTS = 50_000_000      # every input of a task is held in memory, as tokens and labels
EVAL_CHUNK = 65_536          # inputs per forward pass when measuring a model on all of them (metrics.evaluate)
MEMORY_SHARE = 0.8           # a run may use this share of the available memory (CIRCUITS_MEMORY_LIMIT_GB overrides)


@dataclass
class Dataset:
    tokens: torch.Tensor      # [n, n_ctx] long, every input of the task
    labels: torch.Tensor      # [n] long
    train_idx: torch.Tensor   # [n_train] long, indices into tokens
    test_idx: torch.Tensor    # [n_test] long
    p: int
    d_vocab: int              # input vocabulary = output classes

    @property
    def n_ctx(self) -> int:
        return self.tokens.shape[1]

    def to(self, device) -> "Dataset":
        return Dataset(self.tokens.to(device), self.labels.to(device), self.train_idx.to(device),
                       self.test_idx.to(device), self.p, self.d_vocab)

    def with_train(self, train_idx: torch.Tensor) -> "Dataset":
        """The same task and test set with another training set (e.g. a nested subset)."""
        return Dataset(self.tokens, self.labels, train_idx.to(self.tokens.device), self.test_idx, self.p, self.d_vocab)


def operands(task: TaskConfig) -> torch.Tensor:
    """All operand tuples of the task, [n, k] long, in itertools.product order (division: y != 0)."""
    a = torch.arange(task.p, dtype=torch.long)
    x = torch.cartesian_prod(*[a] * task.k)
    if task.op == "/":
        x = x[x[:, 1] != 0]
    return x


def answers(task: TaskConfig, x: torch.Tensor) -> torch.Tensor:
    p = task.p
    if task.op == "+":
        return x.sum(1) % p
    if task.op == "-":
        return (x[:, 0] - x[:, 1]) % p
    if task.op == "*":
        return (x[:, 0] * x[:, 1]) % p
    inv = torch.tensor([pow(int(y), p - 2, p) for y in range(p)])  # Fermat: y^(p-2) = 1/y mod prime p
    return (x[:, 0] * inv[x[:, 1]]) % p


def encode(task: TaskConfig, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Operands [n, k] -> tokens [n, n_ctx] in the task's layout, and the vocabulary size."""
    p, n = task.p, x.shape[0]
    if task.layout == "xy":
        return x.clone(), p
    if task.layout == "xy=":
        eq = torch.full((n, 1), p)
        return torch.cat([x, eq], 1), p + 1
    op, eq = torch.full((n, 1), p), torch.full((n, 1), p + 1)
    cols = []
    for i in range(task.k):
        cols += [x[:, i : i + 1], op] if i < task.k - 1 else [x[:, i : i + 1], eq]
    return torch.cat(cols, 1), p + 2


def split(n: int, frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle all n inputs with the seed; the first int(frac * n) are train, the rest test."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = int(frac * n)
    if n_train < 1:
        raise CircuitsError(f"training fraction {frac} leaves no training example out of {n}")
    return perm[:n_train], perm[n_train:]


def sizes_from(xs, n_all: int) -> list[int]:
    """Training-set sizes given as fractions of all n_all inputs (x <= 1) or as counts (x > 1), sorted."""
    return sorted({int(round(x * n_all)) if x <= 1 else int(x) for x in xs})


def frac_for(size: int, n_all: int) -> float:
    """The task.frac whose split has exactly `size` training inputs: int(frac * n_all) == size."""
    return min((size + 0.5) / n_all, 1.0)


def nested_subset(train_idx: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """The first `size` of a seeded shuffle of train_idx: for one seed, a smaller subset lies inside a larger."""
    if not 1 <= size <= len(train_idx):
        raise CircuitsError(f"subset size {size} must be in [1, {len(train_idx)}]")
    perm = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(seed))
    return train_idx[perm[:size].to(train_idx.device)]


def make_dataset(task: TaskConfig) -> Dataset:
    x = operands(task)
    tokens, d_vocab = encode(task, x)
    labels = answers(task, x)
    if task.random_labels:  # each input gets a fixed random label: only memorisation fits it
        g = torch.Generator().manual_seed(10_000 + task.split_seed)
        labels = torch.randint(task.p, labels.shape, generator=g)
    train_idx, test_idx = split(len(x), task.frac, task.split_seed)
    return Dataset(tokens, labels, train_idx, test_idx, task.p, d_vocab)


# ---------------------------------------------------------------- will it fit?

def n_inputs(task: TaskConfig) -> int:
    """How many inputs the task has: p^k (division: p (p - 1), y != 0)."""
    return task.p * (task.p - 1) if task.op == "/" else task.p ** task.k


def shape(task: TaskConfig) -> tuple[int, int]:
    """(n_ctx, d_vocab) of the task's token layout (as `encode`)."""
    if task.layout == "xy":
        return task.k, task.p
    if task.layout == "xy=":
        return task.k + 1, task.p + 1
    return 2 * task.k, task.p + 2


def activations_per_input(model: ModelConfig, n_ctx: int) -> int:
    """A generous count of the floats one input's forward pass keeps (for the backward pass), logits aside."""
    d, m = model.d_model, model.d_mlp
    if model.arch == "transformer":
        return model.n_layers * n_ctx * (4 * d + 3 * model.n_heads * model.d_head + 2 * model.n_heads * n_ctx + 2 * m)
    if model.arch == "mlp":
        return n_ctx * d + 2 * model.mlp_depth * m
    gates = {"lstm": 4, "gru": 3}.get(model.arch, 1)
    dirs = 2 if model.arch == "birnn" or model.bidirectional else 1
    return n_ctx * d + 2 * n_ctx * model.rnn_layers * dirs * gates * model.hidden


def count_params(model: ModelConfig, d_vocab: int, n_ctx: int) -> int:
    """The model's number of parameters, counted from its config (circuits/models; no model built)."""
    d, m, V = model.d_model, model.d_mlp, d_vocab
    if model.arch == "transformer":
        block = 4 * model.n_heads * d * model.d_head + 2 * d * m + m + d + (4 * d if model.layernorm else 0)
        return V * d + n_ctx * d + model.n_layers * block + d * V
    if model.arch == "mlp":
        return V * d + n_ctx * d * m + m + (model.mlp_depth - 1) * (m * m + m) + m * V + V
    gates = {"lstm": 4, "gru": 3}.get(model.arch, 1)
    dirs = 2 if model.arch == "birnn" or model.bidirectional else 1
    h = model.hidden
    rnn = sum(dirs * gates * h * ((d if layer == 0 else dirs * h) + h + 2) for layer in range(model.rnn_layers))
    return V * d + rnn + dirs * h * V + V


def memory_estimate(task: TaskConfig, model: ModelConfig, batch_size: int = 0,
                    on_gpu: bool = False) -> dict[str, float]:
    """Bytes a run of the task needs, in parts: `dataset` (operands, tokens, labels, split, the training
    inputs' copy), `model` (weights, gradients, optimiser state, a checkpoint in memory) and `step`, the
    larger of one training step (full batch unless batch_size) and one evaluation chunk of EVAL_CHUNK
    inputs. On a GPU the step's activations are in GPU memory, so `step` is 0 (the RAM estimate)."""
    n, (n_ctx, d_vocab) = n_inputs(task), shape(task)
    n_train = max(int(task.frac * n), 1)
    batch = min(batch_size, n_train) if batch_size else n_train
    act = activations_per_input(model, n_ctx)
    wide = 2 if model.dtype == "float64" else 1           # float64 parameters and activations: twice the bytes
    train_step = batch * (6 * wide * act + 24 * d_vocab)  # measured at p = 1009: 0.6-0.9 of this
    eval_chunk = min(EVAL_CHUNK, n) * (4 * wide * act + 24 * d_vocab)
    return {"dataset": 8 * n * (task.k + 2 * n_ctx + 6),
            "model": 40 * wide * count_params(model, d_vocab, n_ctx),
            "step": 0 if on_gpu else max(train_step, eval_chunk)}


def memory_limit() -> tuple[float | None, str]:
    """(bytes a run may use, where that number comes from): $CIRCUITS_MEMORY_LIMIT_GB, else MEMORY_SHARE
    of MemAvailable in /proc/meminfo; None where neither is known (no check)."""
    raw = os.environ.get("CIRCUITS_MEMORY_LIMIT_GB")
    if raw:
        try:
            gb = float(raw)
        except ValueError:
            raise CircuitsError(f"CIRCUITS_MEMORY_LIMIT_GB must be a number of GB, got {raw!r}") from None
        return gb * 1e9, f"CIRCUITS_MEMORY_LIMIT_GB={raw}"
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None, "unknown"
    return MEMORY_SHARE * kb * 1024, f"{MEMORY_SHARE:.0%} of the {kb * 1024 / 1e9:.1f} GB available"


def check_fits(task: TaskConfig, model: ModelConfig, batch_size: int = 0, device: str = "cpu") -> None:
    """Refuse, before anything is built, a task with more than MAX_INPUTS inputs or a run whose
    `memory_estimate` is over `memory_limit()`: one CircuitsError naming the sizes."""
    n = n_inputs(task)
    if n > MAX_INPUTS:
        raise CircuitsError(f"task p={task.p}, k={task.k} has {n:,} inputs, more than the {MAX_INPUTS:,} this "
                            f"testbed builds (it holds every input in memory); use a smaller --p or task.k")
    on_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    parts = memory_estimate(task, model, batch_size, on_gpu)
    limit, why = memory_limit()
    total = sum(parts.values())
    if limit is not None and total > limit:
        shown = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in parts.items())
        raise CircuitsError(f"task p={task.p}, k={task.k} with this model needs about {total / 1e9:.1f} GB "
                            f"({shown}), more than the {limit / 1e9:.1f} GB allowed ({why}); use a smaller --p "
                            f"or model, --set optim.batch_size=N, or set CIRCUITS_MEMORY_LIMIT_GB")
