"""The efficiency and D_crit machinery: norm at a fixed logit by rescaling, the crossing and its
judging, the method ordering, and small real runs of both protocols end to end. (The phenomena on
the quick presets are judged by the slow `circuits check` test.)"""
import json
import pytest
import torch

from circuits import api
from circuits.config import ModelConfig
from circuits.errors import CircuitsError
from circuits.metrics import param_norm
from circuits.models import build_model
from circuits.tasks import Dataset
from protocols import dcrit, efficiency


def _mlp_dataset():
    """A fresh bias-free-at-init MLP (biases start at 0: logits are exactly 3-homogeneous in the
    weights) and a dataset whose labels are its own argmax, so its correct-class logit is positive."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="mlp", d_model=16, d_mlp=32), d_vocab=12, n_ctx=3)
    tokens = torch.randint(0, 11, (60, 3))
    with torch.no_grad():
        labels = model(tokens).argmax(-1)
    return model, Dataset(tokens, labels, torch.arange(40), torch.arange(40, 60), 11, 12)


def test_norm_at_logit_rescales_to_the_target():
    model, data = _mlp_dataset()
    logit = efficiency.logit_at_scale(model, data, 1.0)
    assert logit > 0
    out = efficiency.norm_at_logit(model, data, target=10 * logit)
    assert out["kappa"] == pytest.approx(3.0, abs=1e-3)              # 3 weight matrices, zero biases
    assert efficiency.logit_at_scale(model, data, out["scale"]) == pytest.approx(10 * logit, rel=1e-4)
    # homogeneous of degree 3: the scale is 10^(1/3), the norm at the target that times the norm
    assert out["scale"] == pytest.approx(10 ** (1 / 3), rel=1e-4)
    assert out["norm_at_target"] == pytest.approx(10 ** (1 / 3) * param_norm(model), rel=1e-4)
    assert efficiency.logit_at_scale(model, data, 1.0) == logit       # the model itself is untouched


def _circuits(mem_norm, gen_norm, seeds=(0, 1, 2)):
    rows = []
    for s in seeds:
        for D in (100, 200, 400, 800):
            rows.append({"kind": "mem", "D": D, "seed": s, "final_train_acc": 1.0, "final_test_acc": 0.02,
                         "norm_at_target": mem_norm(D) + 0.1 * s, "kappa": 3.0, "logit": 20.0, "final_norm": 1.0})
        for D in (1000, 1500, 2000):
            rows.append({"kind": "gen", "D": D, "seed": s, "final_train_acc": 1.0, "final_test_acc": 1.0,
                         "norm_at_target": gen_norm(D) + 0.1 * s, "kappa": 3.0, "logit": 20.0, "final_norm": 1.0})
    return rows


CRIT = dict(efficiency.CRITERIA)


def test_crossing_of_a_rising_mem_line_and_a_flat_gen_level():
    rows = _circuits(lambda D: 2 * D**0.5, lambda D: 40.0, seeds=(0,))
    status, m = efficiency.analyse(rows, CRIT, n_boot=100, p_mod=47)
    assert m["mem_rises"] is False                                    # one seed: no interval, not judged to rise
    rows = _circuits(lambda D: 2 * D**0.5, lambda D: 40.0)
    status, m = efficiency.analyse(rows, CRIT, n_boot=100, p_mod=47)
    assert status == "holds" and m["mem_rises"] and m["gen_flat"]
    assert m["mem_exponent"] == pytest.approx(0.5, abs=0.01)
    assert m["D_crit"] == pytest.approx(400, rel=0.02)                # 2 D^0.5 = 40
    lo, hi = m["D_crit_ci"]
    assert lo <= m["D_crit"] <= hi and m["extrapolated"] is False


def test_efficiency_fails_when_gen_is_not_flat_or_mem_does_not_rise():
    rows = _circuits(lambda D: 2 * D**0.5, lambda D: D**0.5)                         # C_gen grows with D
    status, m = efficiency.analyse(rows, CRIT, n_boot=50, p_mod=47)
    assert status == "fails" and not m["gen_flat"]
    rows = _circuits(lambda D: 200 * D**-0.2, lambda D: 40.0)                        # C_mem falls with D
    status, m = efficiency.analyse(rows, CRIT, n_boot=50, p_mod=47)
    assert status == "fails" and not m["mem_rises"] and m["D_crit"] is None


def test_unusable_gen_networks_are_left_out():
    rows = _circuits(lambda D: 2 * D**0.5, lambda D: 40.0)
    for r in rows:
        if r["kind"] == "gen" and r["D"] == 1000:
            r["final_test_acc"] = 0.5                               # did not generalise: not a C_gen network
    status, m = efficiency.analyse(rows, CRIT, n_boot=20, p_mod=47)
    assert m["n_gen"] == 6 and len(m["left_out"]) == 3


def _est(D, ci, status="holds", lo=0.0, hi=1.0):
    return {"D_crit": D, "ci": ci, "frac": None, "status": status, "lo": lo, "hi": hi}


def test_method_order_and_status():
    ests = {"ungrokking": _est(500, (480, 520)), "efficiency": _est(700, (680, 720)), "sweep": _est(850, (800, 900))}
    assert dcrit.ordered(ests) is True
    ests["efficiency"] = _est(950, (920, 980))                    # above the from-scratch interval
    assert dcrit.ordered(ests) is False
    ests["efficiency"] = _est(None, None)
    assert dcrit.ordered(ests) is None
    assert dcrit.method_status("sweep", _est(800, (700, 900), lo=0.0, hi=0.3), dcrit.CRITERIA) == "fails"
    assert dcrit.method_status("sweep", _est(800, None), dcrit.CRITERIA) == "inconclusive"
    assert dcrit.method_status("efficiency", _est(800, (700, 900), status="fails"), dcrit.CRITERIA) == "fails"


def test_weight_decays_and_methods_are_checked():
    cfg = api.resolve("dcrit", "quick")
    assert dcrit.weight_decays(cfg, {"weight_decays": None}) == [1.0]
    assert dcrit.scaled(3000, cfg, 0.5) == 6000                  # the same decay budget lr * wd * steps
    with pytest.raises(CircuitsError, match="must be > 0"):
        dcrit.weight_decays(cfg, {"weight_decays": [1, 0]})
    with pytest.raises(CircuitsError, match="--method must be"):
        dcrit.methods_of({"method": "guess"})


TINY = ["model.d_model=16", "model.d_mlp=32", "task.p=13", "seeds=[0,1]"]


def test_efficiency_protocol_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    v = api.run_protocol("efficiency", "quick", out=tmp_path / "eff", overrides=TINY + [
        "params.mem_sizes=[20,50,90]", "params.gen_sizes=[120,160]", "params.steps=150", "params.eval_every=50",
        "params.n_boot=20", "params.workers=1"])
    m = v["measured"]
    assert v["status"] in ("holds", "fails", "inconclusive")
    assert (tmp_path / "eff" / "figure.png").exists() and (tmp_path / "eff" / "metrics.csv").exists()
    assert set(m["per_size"]) <= {"mem-20", "mem-50", "mem-90", "gen-120", "gen-160"} and m["target_logit"] == 20.0
    assert all(k > 0 for x in m["per_size"].values() for k in x["kappa"] if k is not None)


def test_dcrit_sweep_end_to_end_and_read_by_semigrokking(tmp_path, monkeypatch):
    from protocols.semigrokking import dcrit_from_store

    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs" / "dcrit" / "tiny"
    v = api.run_protocol("dcrit", "quick", out=out, overrides=TINY + [
        "params.method=sweep", "params.sweep={sizes: [30, 60, 100, 140], steps: 300, eval_every: 50}",
        "params.workers=1"])
    m = v["measured"]
    assert list(m["methods"]) == ["sweep"] and m["p"] == 13 and m["arch"] == "mlp"
    assert len(m["methods"]["sweep"]["1.0"]["points"]) == 8                 # 4 sizes x 2 seeds
    assert (out / "figure.png").exists()
    saved = json.loads((out / "verdict.json").read_text())
    assert saved["status"] == v["status"]
    if m.get("D_crit"):
        cfg = api.resolve("semigrokking", "quick", overrides=["task.p=13"])
        assert dcrit_from_store(cfg, tmp_path / "runs") == pytest.approx(m["D_crit"])


def test_cli_dcrit_bad_input_is_one_line(tmp_path):
    from test_cli import cli

    for args, msg in ((["--wd", "1,x"], "--wd expects numbers"), (["--method", "guess"], "--method must be"),
                      (["--wd", "0,1"], "must be > 0")):
        r = cli("dcrit", *args, "--out", str(tmp_path / "d"))
        assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and msg in r.stderr
