import os

import pytest
import torch

from circuits.config import ModelConfig, TaskConfig
from circuits.errors import CircuitsError
from circuits.tasks import (check_fits, count_params, make_dataset, memory_estimate, memory_limit, n_inputs,
                            nested_subset, operands, split)


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


@pytest.mark.parametrize("p,k,op", [(5, 2, "+"), (4, 3, "+"), (7, 2, "/")])
def test_operands_are_built_as_tensors_in_product_order(p, k, op):
    import itertools
    ref = torch.tensor(list(itertools.product(range(p), repeat=k)))
    ref = ref[ref[:, 1] != 0] if op == "/" else ref
    assert torch.equal(operands(TaskConfig(p=p, k=k, op=op)), ref)
    assert n_inputs(TaskConfig(p=p, k=k, op=op)) == len(ref)


@pytest.mark.parametrize("task,msg", [
    (TaskConfig(p=100003), "task p=100003, k=2 has 10,000,600,009 inputs, more than the 50,000,000"),
    (TaskConfig(p=47, k=8), "task p=47, k=8 has 23,811,286,661,761 inputs"),
])
def test_check_fits_refuses_too_many_inputs_before_building(task, msg):
    with pytest.raises(CircuitsError, match=msg):
        check_fits(task, ModelConfig())


def test_check_fits_refuses_over_the_memory_limit(monkeypatch):
    monkeypatch.setenv("CIRCUITS_MEMORY_LIMIT_GB", "1")
    task, model = TaskConfig(p=1009, frac=0.4), ModelConfig(d_model=64, d_head=16, d_mlp=256)
    msg = r"needs about .* GB .* more than the 1.0 GB allowed \(CIRCUITS_MEMORY_LIMIT_GB=1\)"
    with pytest.raises(CircuitsError, match=msg):
        check_fits(task, model)
    monkeypatch.setenv("CIRCUITS_MEMORY_LIMIT_GB", "100")
    check_fits(task, model)                                      # ~17 GB: fits 100
    assert check_fits(TaskConfig(p=113), ModelConfig()) is None
    parts = memory_estimate(task, model)
    assert parts["step"] > 10e9 > parts["dataset"] > 50e6          # a full-batch step of 407,232 inputs dominates
    assert memory_estimate(task, model, batch_size=512)["step"] < parts["step"] / 5   # an evaluation chunk dominates
    assert memory_estimate(task, model, on_gpu=True)["step"] == 0


def test_memory_limit_reads_meminfo_or_the_environment(monkeypatch):
    monkeypatch.delenv("CIRCUITS_MEMORY_LIMIT_GB", raising=False)
    limit, why = memory_limit()
    if os.path.exists("/proc/meminfo"):
        assert limit > 0 and why.startswith("80% of the")
    monkeypatch.setenv("CIRCUITS_MEMORY_LIMIT_GB", "2.5")
    assert memory_limit() == (2.5e9, "CIRCUITS_MEMORY_LIMIT_GB=2.5")


@pytest.mark.parametrize("kw", [{}, {"n_layers": 2}, {"arch": "mlp", "mlp_depth": 3}, {"arch": "lstm"},
                                {"arch": "gru", "rnn_layers": 3}, {"arch": "birnn"}])
def test_parameter_count_from_the_config(kw):
    from circuits.models import build_model, n_params
    cfg = ModelConfig(**kw)
    assert count_params(cfg, 114, 3) == n_params(build_model(cfg, 114, 3))
