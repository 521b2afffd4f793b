"""The efficiency and D_crit machinery: norm at a fixed logit by rescaling, the crossing and its
judging, the method ordering, and small real runs of both protocols end to end. (The phenomena on
the quick presets are judged by the slow `circuits check` test.)"""
import json
import pytest
import torch

import circuits
from circuits import api
from circuits.config import ModelConfig
from circuits.config import protocol_fields
from circuits.errors import CircuitsError
from circuits.fit import Estimate
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


def _circuits(mem_norm, gen_norm, seeds=(0, 1, 2, 3, 4)):
    rows = []
    for s in seeds:
        for D in (100, 200, 400, 800):
            rows.append({"kind": "mem", "D": D, "seed": s, "final_train_acc": 1.0, "final_test_acc": 0.02,
                         "norm_at_target": mem_norm(D) + 0.1 * s, "kappa": 3.0, "logit": 20.0, "final_norm": 1.0})
        for D in (1000, 2000, 4000, 8000):            # as wide a range in ln D as C_mem's
            rows.append({"kind": "gen", "D": D, "seed": s, "final_train_acc": 1.0, "final_test_acc": 1.0,
                         "norm_at_target": gen_norm(D) + 0.1 * s, "kappa": 3.0, "logit": 20.0, "final_norm": 1.0})
    return rows


CRIT = dict(efficiency.CRITERIA)


def test_crossing_of_a_rising_mem_line_and_a_flat_gen_level():
    rows = _circuits(lambda D: 2 * D**0.5, lambda D: 40.0, seeds=(0,))
    status, m = efficiency.analyse(rows, CRIT, n_boot=100, n_all=47 ** 2)
    assert m["mem_exponent_ci"] is None and m["n_seeds"] == 1           # one seed: no interval, no range
    assert "ci" not in m["mem_exponent_est"] and "seed_range" not in m["mem_exponent_est"]
    rows = _circuits(lambda D: 2 * D**0.5, lambda D: 40.0)
    status, m = efficiency.analyse(rows, CRIT, n_boot=100, n_all=47 ** 2)
    assert status == "holds" and {c["status"] for c in m["claims"]} == {"holds"}
    assert m["mem_exponent"] == pytest.approx(0.5, abs=0.01)
    assert m["D_crit"] == pytest.approx(400, rel=0.02)                # 2 D^0.5 = 40
    lo, hi = m["D_crit_ci"]
    assert lo <= m["D_crit"] <= hi and m["extrapolated"] is False


def test_efficiency_fails_when_gen_is_not_flat_or_mem_does_not_rise():
    rows = _circuits(lambda D: 2 * D**0.5, lambda D: D**0.5)                         # C_gen grows with D
    status, m = efficiency.analyse(rows, CRIT, n_boot=50, n_all=47 ** 2)
    claims = {c["claim"]: c["status"] for c in m["claims"]}
    assert status == "fails" and claims[efficiency.GEN_FLAT] == "fails"
    rows = _circuits(lambda D: 200 * D**-0.2, lambda D: 40.0)                        # C_mem falls with D
    status, m = efficiency.analyse(rows, CRIT, n_boot=50, n_all=47 ** 2)
    claims = {c["claim"]: c["status"] for c in m["claims"]}
    assert status == "fails" and claims[efficiency.MEM_RISES] == "fails" and m["D_crit"] is None


def test_unusable_gen_networks_are_left_out():
    rows = _circuits(lambda D: 2 * D**0.5, lambda D: 40.0)
    for r in rows:
        if r["kind"] == "gen" and r["D"] == 1000:
            r["final_test_acc"] = 0.5                               # did not generalise: not a C_gen network
    status, m = efficiency.analyse(rows, CRIT, n_boot=20, n_all=47 ** 2)
    assert m["n_gen"] == 15 and len(m["left_out"]) == 5


def _est(D, ci=None, rise=1.0, seed_range=None):
    e = Estimate(D, 5 if ci else 2, ci=ci, seed_range=seed_range)
    return {"est": e, "D_crit": D, "ci": ci, "rise": rise, "points": [(100, 0.0), (2000, 1.0)]}


def test_method_order_and_status():
    ests = {"ungrokking": _est(500, (480, 520)), "efficiency": _est(700, (680, 720)), "sweep": _est(850, (800, 900))}
    assert dcrit.ordered(ests) is True
    ests["efficiency"] = _est(950, (920, 980))                    # above the from-scratch interval
    assert dcrit.ordered(ests) is False
    ests["efficiency"] = _est(880, (850, 910))                    # overlapping the from-scratch interval
    assert dcrit.ordered(ests) is None
    ests["efficiency"] = _est(None)
    assert dcrit.ordered(ests) is None
    # fewer than 5 seeds: point estimates, more than the margin apart (never the ranges' overlap)
    ests = {"ungrokking": _est(500, seed_range=(400, 760)), "efficiency": _est(700, seed_range=(600, 900)),
            "sweep": _est(850, seed_range=(690, 870))}
    assert dcrit.ordered(ests, margin=0.1) is True and dcrit.ordered(ests, margin=0.25) is None
    assert dcrit.method_status("sweep", _est(800, (700, 900), rise=0.3), dcrit.CRITERIA) == "fails"
    assert dcrit.method_status("sweep", _est(800), dcrit.CRITERIA) == "holds"          # no interval needed
    assert dcrit.method_status("sweep", _est(None), dcrit.CRITERIA) == "inconclusive"
    assert dcrit.method_status("sweep", _est(5000), dcrit.CRITERIA) == "inconclusive"  # beyond the sizes


def test_some_methods_are_judged_on_the_order_of_those_run():
    """`--method ungrokking,efficiency` (the paper preset's default): the order between the two is
    judged and can fail; hysteresis needs the sweep, so it is not judged without it."""
    crit = dcrit.CRITERIA
    two = {"ungrokking": {1.0: _est(600, (580, 640))}, "efficiency": {1.0: _est(780, (740, 810))}}
    claims = dcrit.judge(two, crit)
    assert claims[dcrit.ORDER] == "holds" and dcrit.HYSTERESIS not in claims
    two["efficiency"] = {1.0: _est(500, (470, 530))}                     # the efficiency crossing below ungrokking
    assert dcrit.judge(two, crit)[dcrit.ORDER] == "fails"
    with_sweep = {"ungrokking": {1.0: _est(600, (580, 640))}, "sweep": {1.0: _est(1000, (900, 1100))}}
    claims = dcrit.judge(with_sweep, crit)
    assert claims[dcrit.ORDER] == "holds" and claims[dcrit.HYSTERESIS] == "fails"   # 0.6 > 0.5
    assert dcrit.ORDER not in dcrit.judge({"ungrokking": two["ungrokking"]}, crit)
    assert dcrit.methods_of({"method": "efficiency, ungrokking"}) == ["ungrokking", "efficiency"]
    assert dcrit.methods_of({"method": "all"}) == ["sweep", "ungrokking", "efficiency"]
    for bad in ("ungrokking,", "sweep,sweep", "ungrokking,guess", ""):
        with pytest.raises(CircuitsError, match="--method must be"):
            dcrit.methods_of({"method": bad})


def test_weight_decays_and_methods_are_checked():
    cfg = api.resolve("dcrit", "quick")
    assert dcrit.weight_decays(cfg, {"weight_decays": None}) == [1.0]
    assert dcrit.scaled(3000, cfg, 0.5) == 6000                  # the same decay budget lr * wd * steps
    with pytest.raises(CircuitsError, match="must be > 0"):
        dcrit.weight_decays(cfg, {"weight_decays": [1, 0]})
    with pytest.raises(CircuitsError, match="--method must be"):
        dcrit.methods_of({"method": "guess"})


def test_the_sweep_runs_its_own_seeds_and_the_other_methods_keep_the_configs():
    """params.sweep.seeds: runs from scratch cost the most, so a dcrit of 5 efficiency seeds can
    keep the sweep to fewer (None: the config's seeds, as before)."""
    from circuits.validate import validate_run

    cfg = api.resolve("dcrit", "paper", overrides=["params.sweep.seeds=[0]"])
    p = protocol_fields(cfg.params, dcrit.DEFAULTS, "params")
    assert cfg.seeds == [0, 1, 2, 3, 4]
    assert {j.seed for j in dcrit.sweep_jobs(cfg, p, 1.0)} == {0}
    assert {j.seed for j in efficiency.jobs_for(dcrit.efficiency_config(cfg, p, 1.0))} == {0, 1, 2, 3, 4}
    full = api.resolve("dcrit", "paper")
    assert {j.seed for j in dcrit.sweep_jobs(full, protocol_fields(full.params, dcrit.DEFAULTS, "params"), 1.0)} \
        == {0, 1, 2, 3, 4}
    with pytest.raises(CircuitsError, match="params.sweep.seeds must not repeat"):
        validate_run(api.resolve("dcrit", "paper", overrides=["params.method=all", "params.sweep.seeds=[1,1]"]))


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
    """From scratch at p = 13 (a small MLP, lr 3e-2: it generalises within a few hundred steps near the
    top of the sizes), 5 seeds: an interval, a definite verdict, and the estimate read back."""
    from protocols.semigrokking import dcrit_from_store

    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs" / "dcrit" / "tiny"
    v = api.run_protocol("dcrit", "quick", out=out, overrides=[
        "model.d_model=16", "model.d_mlp=64", "task.p=13", "optim.lr=0.03", "seeds=[0,1,2,3,4]",
        "params.method=sweep", "params.sweep={sizes: [95, 115, 135, 160], steps: 600, eval_every: 100, n_boot: 100}",
        "params.workers=1"])
    m = v["measured"]
    assert list(m["methods"]) == ["sweep"] and m["p"] == 13 and m["arch"] == "mlp"
    row = m["methods"]["sweep"]["1.0"]
    assert len(row["points"]) == 20                                            # 4 sizes x 5 seeds
    assert v["status"] == "holds" and m["claims"] == [{"claim": dcrit.ESTIMATE, "status": "holds"}]
    assert 95 <= m["D_crit"] <= 160 and m["D_crit_method"] == "sweep"         # inside the sizes measured
    lo, hi = row["ci"]
    assert lo <= m["D_crit"] <= hi and row["n_seeds"] == 5
    assert row["n_distinct_resamples"] > 10 and row["estimate"]["ci_is"].startswith("95% bootstrap")
    accs = {D: [a for d, a in row["points"] if d == D] for D in (95, 160)}
    assert max(accs[95]) < 0.5 < min(accs[160])                               # a transition in the data itself
    assert set(m["sensitivity"]) == {"min_rise"}                                # the only claim judged here
    assert m["sensitivity"]["min_rise"]["0.5"] == "holds"
    assert (out / "figure.png").exists()
    saved = json.loads((out / "verdict.json").read_text())
    assert saved["status"] == v["status"] and saved["rationale"]["min_rise"].startswith("THEORY.md")
    cfg = api.resolve("semigrokking", "quick", overrides=["task.p=13", "model.d_model=16", "model.d_mlp=64", "optim.lr=0.03"])
    assert dcrit_from_store(cfg, tmp_path / "runs") == (pytest.approx(m["D_crit"]), str(out))
    cfg = api.resolve("semigrokking", "quick", overrides=["task.p=13"])         # the preset's own model: not this run's
    assert dcrit_from_store(cfg, tmp_path / "runs") is None
    names = circuits.load(out).networks                                        # every network it trained
    assert len(names) == 20 and "sweep-wd1-D95-seed0" in names


def test_cli_dcrit_bad_input_is_one_line(tmp_path):
    from test_cli import cli

    for args, msg in ((["--wd", "1,x"], "--wd expects"), (["--method", "guess"], "--method must be"),
                      (["--wd", "0,1"], "must be > 0")):
        r = cli("dcrit", *args, "--out", str(tmp_path / "d"))
        assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and msg in r.stderr


def test_efficiency_networks_stopped_when_settled_measure_as_the_full_budget(tmp_path, monkeypatch):
    """Compute-aware efficiency: a network stops once its norm and train logit are steady over 3
    decay times (cap: the budget) and records it; its norm at the target logit is the full budget's
    to 1%, in fewer steps. Measured: 2,050 / 2,300 / 2,750 steps against 3 x 3,000; norms at the
    target 14.611 / 18.981 / 25.896 against 14.604 / 18.934 / 25.785."""
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    base = ["model.d_model=16", "model.d_mlp=32", "task.p=13", "seeds=[0]", "optim.lr=0.01", "params.mem_sizes=[20,50]",
            "params.gen_sizes=[120]", "params.steps=3000", "params.gen_steps=3000", "params.eval_every=50", "params.n_boot=20", "params.workers=1"]
    v = {s: api.run_protocol("efficiency", "quick", out=tmp_path / s, overrides=base + [f"params.stop_when_settled={s}"])
         for s in ("true", "false")}
    cut, full = v["true"]["measured"], v["false"]["measured"]
    assert cut["n_settled"] >= 2 and full["n_settled"] >= cut["n_settled"]
    for name, a in cut["per_size"].items():
        b = full["per_size"][name]["norm_at_target"]
        assert a["norm_at_target"][0] == pytest.approx(b[0], rel=0.01), name
    steps = {s: [r["steps"] for r in v[s]["measured"]["runs"]] for s in ("true", "false")}
    assert steps["false"] == [3000] * 3 and sum(steps["true"]) < 0.8 * sum(steps["false"])


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_dcrit_shares_its_networks_with_the_ungrokking_and_efficiency_runs_of_the_same_preset(preset):
    """`circuits dcrit` and `circuits run ungrokking` / `efficiency` at the same preset train the same
    networks once: the grokked network's cache key, every subset run's checkpoint and every circuit
    network's cache entry of dcrit's methods are among the protocols' own (at p = 113 they were not:
    dcrit's subset runs evaluated every 500 steps and settled over 3 decay times, ungrokking's 250 / 5)."""
    from circuits.cache import cache_key
    from protocols import ungrokking as ug
    kw = {"p": 113} if preset == "paper" else {}
    d = api.resolve("dcrit", preset, **kw)
    u = api.resolve("ungrokking", preset, arch=d.model.arch, **kw)
    e = api.resolve("efficiency", preset, arch=d.model.arch, **kw)
    dp = protocol_fields(d.params, dcrit.DEFAULTS, "params")
    sub = dcrit.ungrokking_config(d, dp, [d.optim.weight_decay])
    grok = ug.grokked_rule(0.99)[1]
    assert cache_key(sub, 0, grok) == cache_key(u, 0, grok)
    mine = {j.checkpoint for j in ug.jobs_for(sub, 0, "/cache/grokked/model.pt", 10**6)}
    assert mine and mine <= {j.checkpoint for j in ug.jobs_for(u, 0, "/cache/grokked/model.pt", 10**6)}
    nets = set(efficiency.networks(dcrit.efficiency_config(d, dp, d.optim.weight_decay)).values())
    assert nets and nets <= set(efficiency.networks(e).values())
