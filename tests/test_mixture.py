"""The mixture protocol (protocols/mixture.py): product-weight maths against autograd, the readings
and the judging on synthetic histories, the dynamics on synthetic look-up-table circuits, and one
small real run (two frozen MLPs, p = 23)."""
import json

import pytest
import torch
import torch.nn.functional as F

from circuits.config import Config, ModelConfig, OptimConfig, TaskConfig, TrainConfig
from circuits.errors import CircuitsError
from protocols import mixture as mx

f64 = torch.float64
CRIT = mx.CRITERIA


def test_written_out_gradient_equals_autograd():
    g = torch.Generator().manual_seed(0)
    L_mem, L_gen = torch.randn(40, 7, generator=g, dtype=f64) * 3, torch.randn(40, 7, generator=g, dtype=f64) * 3
    labels = torch.randint(7, (40,), generator=g)
    for sub in ([0.3, 10.0, -0.2, 1.0], [1.5, 0.7, 0.4, 2.0]):
        sub = torch.tensor(sub, dtype=f64, requires_grad=True)
        (want,) = torch.autograd.grad(F.cross_entropy(mx.mix_logits(sub, L_mem, L_gen), labels), sub)
        torch.testing.assert_close(mx.data_grad(sub.detach(), L_mem, L_gen, labels), want, rtol=1e-10, atol=1e-12)


def test_product_weights_start_at_zero_and_only_the_first_sub_weight_moves():
    L = torch.randn(10, 5, dtype=f64)
    labels = torch.randint(5, (10,))
    sub = torch.tensor([0.0, 10.0, 0.0, 1.0], dtype=f64)
    assert torch.equal(mx.mix_logits(sub, L, 2 * L), torch.zeros_like(L))       # w_mem = w_gen = 0
    g = mx.data_grad(sub, L, 2 * L, labels)
    assert g[1] == 0 and g[3] == 0                                              # w_m2, w_g2: partner is 0
    # d/dw_m1 = w_m2 dL/dw_mem and dL/dw_gen = 2 dL/dw_mem here, so g_m1 = 10 g_mem, g_g1 = 2 g_mem
    assert g[0].item() == pytest.approx(5 * g[2].item(), rel=1e-12)


def synthetic(a_mem=2.0, a_gen=6.0, q=13, n=130):
    """Look-up-table circuits: C_gen puts a_gen on the correct class everywhere; C_mem puts a_mem on
    the correct class of the training half and on a fixed wrong class of the test half."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(q, (n,), generator=g)
    perm = torch.randperm(n, generator=g)
    train_idx, test_idx = perm[: n // 2], perm[n // 2:]
    target = labels.clone()
    target[test_idx] = (labels[test_idx] + 1) % q
    return a_mem * F.one_hot(target, q).to(f64), a_gen * F.one_hot(labels, q).to(f64), labels, train_idx, test_idx


def test_slow_gen_groks_and_equal_speed_does_not_on_lookup_table_circuits():
    L_mem, L_gen, labels, tr, te = synthetic()
    p = {**mx.DEFAULTS, "lr": 0.01, "weight_decay": 0.3, "steps": 1500, "points_per_decade": 30}
    readings = {}
    for name in mx.SETTINGS:
        h = mx.train_mixture(p[name], L_mem, L_gen, labels, tr, te, p)
        readings[name] = (mx.acc_reading(h, CRIT, 1.0), mx.loss_reading(h, CRIT))
    acc, loss = readings["slow_gen"]
    assert (acc["reading"], loss["reading"]) == ("grokking", "rose")
    assert acc["test_acc_at_fit"] == 0.0 and loss["test_loss_rise"] > 1.5
    acc, loss = readings["equal_speed"]
    assert (acc["reading"], loss["reading"]) == ("no_delay", "together")
    assert acc["test_acc_at_fit"] == 1.0


def test_efficiency_is_the_weight_a_circuit_needs_alone():
    L_mem, L_gen, labels, tr, _ = synthetic()
    w_mem = mx.weight_needed(L_mem[tr], labels[tr], 0.1)
    w_gen = mx.weight_needed(L_gen[tr], labels[tr], 0.1)
    assert w_mem == pytest.approx(3 * w_gen, rel=0.05)              # logits 2 vs 6 per unit weight
    assert F.cross_entropy(w_gen * L_gen[tr], labels[tr]).item() <= 0.1
    assert mx.weight_needed(torch.zeros(5, 3, dtype=f64), torch.zeros(5, dtype=torch.long), 0.1) is None


def hist(train_loss, test_loss, train_acc=None, test_acc=None):
    n = len(train_loss)
    train_acc, test_acc = train_acc or [1.0] * n, test_acc or [0.0] * n
    return [{"step": 10 * i, "train_loss": a, "test_loss": b, "train_acc": c, "test_acc": d}
            for i, (a, b, c, d) in enumerate(zip(train_loss, test_loss, train_acc, test_acc))]


def test_loss_reading():
    rose = hist([3.9, 1.0, 0.05, 0.01, 0.01, 0.01, 0.01] + [0.01] * 20, [3.9, 6.0, 8.0, 7.0] + [5.0] * 22 + [0.5])
    r = mx.loss_reading(rose, CRIT)
    assert r["reading"] == "rose" and r["t_train_loss_fit"] == 20 and r["t_test_loss_fit"] == 260
    assert r["test_loss_rise"] == pytest.approx(8.0 / 3.9)
    together = hist([3.9, 1.0, 0.05, 0.01], [3.9, 3.0, 2.0, 0.5])
    assert mx.loss_reading(together, CRIT)["reading"] == "together"
    early_fall = hist([3.9, 1.0, 0.05, 0.01], [3.9, 6.0, 8.0, 0.5])              # falls at once: no delay
    assert mx.loss_reading(early_fall, CRIT)["reading"] == "neither"
    slight = hist([3.9, 1.0, 0.05], [3.9, 4.0, 4.1])                            # rose < 1.1x: neither
    assert mx.loss_reading(slight, CRIT)["reading"] == "neither"
    assert mx.loss_reading(hist([3.9, 6.0, 8.0], [3.9, 9.0, 9.0]), CRIT)["reading"] == "inconclusive"
    assert mx.loss_reading(hist([3.9, 0.05, 0.01], [3.9, 9.0, 9.0]), CRIT)["reading"] == "inconclusive"


def test_accuracy_reading_is_the_grokking_delay_detector():
    zeros = [0.0] * 10
    grok = hist(zeros, zeros, [0.0] + [1.0] * 9, [0.0] * 6 + [0.5, 1.0, 1.0, 1.0])
    r = mx.acc_reading(grok, CRIT, 1.0)
    assert r["reading"] == "grokking" and (r["t_train"], r["t_test"]) == (10, 70)
    assert mx.acc_reading(hist(zeros, zeros, [0.0] + [1.0] * 9, [0.0] + [0.9] * 9), CRIT, 1.0)["reading"] == "no_delay"
    quick = hist(zeros, zeros, [0.0] + [1.0] * 9, [0.0, 0.3, 1.0] + [1.0] * 7)     # test fit 1 eval later
    assert mx.acc_reading(quick, CRIT, 1.0)["reading"] == "no_delay"
    assert mx.acc_reading(hist(zeros, zeros, [0.0] + [1.0] * 9, zeros), CRIT, 1.0)["reading"] == "inconclusive"
    # fit is relative to C_gen's own test accuracy: 0.985 is a test fit when C_gen reaches 0.99
    near = hist(zeros, zeros, [0.0] + [1.0] * 9, [0.0] * 6 + [0.985] * 4)
    assert mx.acc_reading(near, CRIT, 1.0)["t_test"] is None
    assert mx.acc_reading(near, CRIT, 0.99)["t_test"] == 60


def test_judge_needs_both_readings():
    assert mx.judge(True, "grokking", "rose") == "holds"
    assert mx.judge(False, "no_delay", "together") == "holds"
    assert mx.judge(False, "grokking", "together") == "fails"
    assert mx.judge(True, "no_delay", "rose") == "fails"
    assert mx.judge(True, "grokking", "inconclusive") == "inconclusive"
    assert mx.judge(True, "no_delay", "inconclusive") == "fails"
    assert mx.judge(False, "inconclusive", "neither") == "fails"


def test_bad_params_are_one_line_errors():
    for bad in ({"slow_gen": [10.0]}, {"optimizer": "lbfgs"}, {"lr": -1.0}, {"nonsense": 1}):
        with pytest.raises(CircuitsError):
            mx.params(Config(params=bad))


def test_small_real_run(tmp_path, monkeypatch):
    """Two frozen MLPs on (x + y) mod 23: C_gen groks, C_mem memorises; the mixture's two settings."""
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    cfg = Config(protocol="mixture", task=TaskConfig(p=23, frac=0.8),
                 model=ModelConfig(arch="mlp", d_model=32, d_mlp=128), optim=OptimConfig(lr=3e-3), train=TrainConfig(steps=3000, eval_every=25, threads=1), seeds=[0],
                 params={"steps": 6000, "lr": 2e-3, "points_per_decade": 20})
    v = mx.run(cfg, tmp_path / "run")
    m = v.measured["per_seed"][0]
    assert m["premise"]["ok"] and m["premise"]["mem_test_acc"] <= 0.5 and m["premise"]["gen_test_acc"] >= 0.99
    assert m["efficiency"]["w_gen_needed"] < m["efficiency"]["w_mem_needed"]       # ingredient 2
    assert m["slow_gen"]["w_gen_over_w_mem_after_step_1"] < 0.1 < 1 < m["equal_speed"]["w_gen_over_w_mem_after_step_1"]
    assert v.measured["statuses"] == {"slow_gen": "holds", "equal_speed": "holds"} and v.status == "holds"
    for f in ("config.yaml", "meta.json", "metrics.csv", "figure.png", "figure.pdf", "verdict.json"):
        assert (tmp_path / "run" / f).exists()
    assert json.loads((tmp_path / "run" / "verdict.json").read_text())["status"] == "holds"
    with pytest.raises(CircuitsError):
        mx.run(Config(protocol="mixture", task=TaskConfig(frac=1.0)), tmp_path / "bad")
