"""Modular-arithmetic datasets: (x op y) mod p, K-operand addition, token layouts, splits, subsets.

Tokens: the numbers 0..p-1 are their own ids; then the operator token (layout `xopy=`) and the `=`
token. Logits range over the whole vocabulary (Nanda et al.: the `=` class included).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from circuits.config import TaskConfig
from circuits.errors import CircuitsError


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
    """All operand tuples of the task, [n, k] long (division: y != 0)."""
    rng = range(task.p)
    rows = list(itertools.product(rng, repeat=task.k))
    x = torch.tensor(rows, dtype=torch.long)
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
