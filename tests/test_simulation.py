"""The toy simulation (protocols/simulation.py): its closed-form losses and gradients, the closed-form
optimum, the slow start of a product weight near 0, and the regimes' verdicts from a real run."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from circuits import api
from circuits.errors import CircuitsError
from protocols import simulation as sim

f64 = torch.float64
PAPER = dict(kappa=1.2, alpha=0.005, q=113)


def test_closed_form_losses_equal_cross_entropy_on_explicit_logits():
    q, w_G, w_M = 113, 2.3, 1.7
    train = torch.zeros(q, dtype=f64)
    train[5] = w_G + w_M                           # the correct class gets both circuits' logit
    test = torch.zeros(q, dtype=f64)
    test[5], test[9] = w_G, w_M                    # C_mem's logit lands on a fixed wrong class
    want_train = F.cross_entropy(train[None], torch.tensor([5]))
    want_test = F.cross_entropy(test[None], torch.tensor([5]))
    w_G, w_M = torch.tensor([w_G], dtype=f64), torch.tensor([w_M], dtype=f64)
    assert sim.train_loss(w_G, w_M, q).item() == pytest.approx(want_train.item(), rel=1e-12)
    assert sim.test_loss(w_G, w_M, q).item() == pytest.approx(want_test.item(), rel=1e-12)


def test_written_out_gradient_equals_autograd():
    torch.manual_seed(0)
    sub = (torch.rand(2, 2, 5, dtype=f64) * 3 - 0.5).requires_grad_(True)     # [circuit, sub-weight, runs]
    P = torch.rand(2, 5, dtype=f64) + 0.5
    for kappa in (1.2, 1.5, 3.0):
        (want,) = torch.autograd.grad(sim.objective(sub, P, kappa, 0.005, 113).sum(), sub)
        torch.testing.assert_close(sim.grad(sub.detach(), P, kappa, 0.005, 113), want, rtol=1e-10, atol=1e-12)


def test_optimum_ratio_minimises_the_penalty_at_fixed_logit():
    # for a fixed s = w_G + w_M (which fixes the train loss), search the split that minimises the penalty
    for P_G, P_M, kappa in ((1.0, 2.0, 1.2), (2.0, 1.0, 1.2), (1.0, 1.5, 1.5), (1.0, 3.0, 0.8)):
        x = torch.linspace(1e-6, 1 - 1e-6, 200_001, dtype=f64)              # share of s carried by C_gen
        w = torch.stack([x, 1 - x]) * 7.0
        pen = sim.penalty(w, torch.tensor([[P_G], [P_M]], dtype=f64), kappa, 0.005)
        best = x[pen.argmin()]
        assert (best / (1 - best)).item() == pytest.approx(sim.optimum_ratio(P_G, P_M, kappa), rel=1e-3)
    assert sim.optimum_ratio(1.0, 2.0, 1.2) == pytest.approx(8.0)           # 2^(2.4/0.8) = 2^3


def test_product_weight_near_zero_learns_slowly():
    P = torch.tensor([[1.0, 1.0], [2.0, 2.0]], dtype=f64)
    sub = torch.tensor([[[0.0, 0.0], [0.005, 1.0]], [[0.0, 0.0], [1.0, 1.0]]], dtype=f64)  # runs: paper, equal
    trace = sim.simulate(sub, P, 1, lr=0.01, **PAPER)
    dw_G, dw_M = trace[1, 0] - trace[0, 0], trace[1, 1] - trace[0, 1]      # [runs]
    assert dw_M[0] > 0 and 0 < dw_G[0] < 1e-3 * dw_M[0]                     # 0.005^2 as fast as C_mem
    assert dw_G[1].item() == pytest.approx(dw_M[1].item(), rel=1e-6)        # equal sub-weights: equal speed


def test_regimes_verdicts_from_a_short_run(tmp_path):
    # a shorter budget than the quick preset: enough to grok (~1e4 steps), not for w_G/w_M to settle
    v = api.run_protocol("simulation", "quick", out=tmp_path / "r",
                         overrides=["params.steps=15000", "params.ungrok_steps=12000", "params.points_per_decade=10"])
    s, m = v["measured"]["statuses"], v["measured"]
    assert s == {"grokking": "holds", "inefficient_gen": "holds", "equal_speed": "holds",
                 "ungrokking": "holds", "optimum": "inconclusive"}, s
    assert v["status"] == "inconclusive"
    g, e = m["regimes"]["grokking"], m["regimes"]["equal_speed"]
    assert min(g["delay_factor"]) > 20 and g["test_loss_max"] > g["test_loss_init"]   # test loss rose before it fell
    assert all(s < 0 for s in g["test_share_at_train"])                        # ... and had not fallen at train fit
    assert all(s > 0.4 * f for s, f in zip(e["test_share_at_train"], e["fractions"]))   # (c) falls with train loss
    assert not m["regimes"]["inefficient_gen"]["fell"]
    assert [c["status"] for c in m["claims"]] == ["holds"] * 4 + ["inconclusive"]
    assert set(m["sensitivity"]["fractions"]) == {"[0.1]", "[0.25]", "[0.5]", "[0.75]", "[0.9]", "[0.95]", "[0.98]"}
    assert all(s == {"grokking": "holds", "equal_speed": "holds"} for s in m["sensitivity"]["fractions"].values())
    u = m["ungrokking"]
    assert u["w_M_after"] > 2 * u["w_M_before"] and u["test_loss_after"] > u["rise_level"] > 1.0
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"config.yaml", "meta.json", "metrics.csv", "figure.png", "verdict.json"} <= files
    assert json.loads((tmp_path / "r" / "verdict.json").read_text())["status"] == "inconclusive"
    rows = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "run,step,split,metric,value" and any(r.startswith("grokking,") and ",test,loss," in r for r in rows)


def test_converges_to_the_closed_form_optimum():
    # the quick preset's regime (a), from init, for 45000 steps at the paper's lr
    P = torch.tensor([[1.0], [2.0]], dtype=f64)
    sub = torch.tensor([[[0.0], [0.005]], [[0.0], [1.0]]], dtype=f64)
    trace = sim.simulate(sub, P, 45_000, lr=0.01, **PAPER)
    ratio = (trace[-1, 0] / trace[-1, 1]).item()
    assert ratio == pytest.approx(8.0, rel=1e-3)
    assert math.isclose(ratio, (trace[-4500, 0] / trace[-4500, 1]).item(), rel_tol=1e-3)


def test_unknown_param_is_a_user_error():
    with pytest.raises(CircuitsError, match=r"unknown config key.*params.kapa"):
        sim.params(api.resolve("simulation", "quick", overrides=["params.kapa=1.5"]))
