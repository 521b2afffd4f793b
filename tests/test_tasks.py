import pytest
import torch

from circuits.config import TaskConfig
from circuits.errors import CircuitsError
from circuits.tasks import make_dataset, nested_subset, split


def test_canonical_task_shapes():
    d = make_dataset(TaskConfig())
    assert d.tokens.shape == (113 * 113, 3) and d.d_vocab == 114
    assert len(d.train_idx) == int(0.3 * 113 * 113) == 3830
    assert (d.tokens[:, 2] == 113).all()                       # [x, y, =]
    x, y = d.tokens[:, 0], d.tokens[:, 1]
    assert torch.equal(d.labels, (x + y) % 113)


@pytest.mark.parametrize("op,fn", [("-", lambda x, y, p: (x - y) % p), ("*", lambda x, y, p: (x * y) % p)])
def test_ops(op, fn):
    d = make_dataset(TaskConfig(op=op, p=13))
    assert torch.equal(d.labels, fn(d.tokens[:, 0], d.tokens[:, 1], 13))


def test_division_is_inverse_of_multiplication():
    d = make_dataset(TaskConfig(op="/", p=13))
    x, y = d.tokens[:, 0], d.tokens[:, 1]
    assert (y != 0).all() and len(d.tokens) == 13 * 12
    assert torch.equal((d.labels * y) % 13, x)


def test_division_needs_prime():
    with pytest.raises(CircuitsError, match="prime"):
        TaskConfig(op="/", p=12)


@pytest.mark.parametrize("layout,n_ctx,vocab", [("xy=", 3, 14), ("xopy=", 4, 15), ("xy", 2, 13)])
def test_layouts(layout, n_ctx, vocab):
    d = make_dataset(TaskConfig(p=13, layout=layout))
    assert d.tokens.shape[1] == n_ctx and d.d_vocab == vocab
    assert int(d.tokens.max()) == vocab - 1


def test_k_operand_addition():
    d = make_dataset(TaskConfig(p=7, k=3, layout="xopy="))
    assert d.tokens.shape == (7**3, 6)                         # [x, +, y, +, z, =]
    assert torch.equal(d.labels, (d.tokens[:, 0] + d.tokens[:, 2] + d.tokens[:, 4]) % 7)


def test_split_is_deterministic_and_disjoint():
    a_tr, a_te = split(1000, 0.3, seed=5)
    b_tr, b_te = split(1000, 0.3, seed=5)
    c_tr, _ = split(1000, 0.3, seed=6)
    assert torch.equal(a_tr, b_tr) and not torch.equal(a_tr, c_tr)
    assert len(a_tr) == 300 and len(set(a_tr.tolist()) | set(a_te.tolist())) == 1000


def test_nested_subsets():
    train, _ = split(1000, 0.5, seed=0)
    small, big = nested_subset(train, 50, seed=3), nested_subset(train, 200, seed=3)
    assert set(small.tolist()) <= set(big.tolist()) <= set(train.tolist())
    with pytest.raises(CircuitsError):
        nested_subset(train, 501, seed=0)


def test_random_labels_fixed_and_not_the_answer():
    a = make_dataset(TaskConfig(p=23, random_labels=True))
    b = make_dataset(TaskConfig(p=23, random_labels=True))
    true = make_dataset(TaskConfig(p=23))
    assert torch.equal(a.labels, b.labels)
    assert (a.labels == true.labels).float().mean() < 0.2
