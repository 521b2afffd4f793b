"""Every protocol can fail: each judge, fed synthetic histories (or final accuracies) in which its claim
is true, says `holds`, and fed ones in which the claim is false, says `fails`. The judges are pure
functions of the numbers, so no training runs here."""
import math

import pytest
import torch

from circuits.detect import combine
from protocols import data_efficiency as de
from protocols import factors
from protocols import grokking
from protocols import late_weight_decay as lw
from protocols import mixture as mx
from protocols import semigrokking as sg
from protocols import simulation as sim

f64 = torch.float64


# ---------------------------------------------------------------- simulation

T = torch.arange(20_001, dtype=f64)
TRAIN = 4.7 * torch.exp(-T / 50) + 0.02                                         # fits by ~250 steps
ROSE_LATE = 4.7 + 2.0 * (1 - torch.exp(-T / 50)) - 6.65 * torch.sigmoid((T - 8000) / 300)   # up, then down at ~8k
TOGETHER = 4.7 * torch.exp(-T / 80) + 0.05                                       # down with the train loss
NEVER = 4.7 + 2.0 * (1 - torch.exp(-T / 50))                                     # up and stays up
SIM = sim.CRITERIA


def _regime(name, test):
    return sim.judge(name, sim.regime_numbers(TRAIN, test, SIM), SIM)


def test_simulation_regimes_hold_when_their_claim_is_true():
    assert _regime("grokking", ROSE_LATE) == "holds"
    assert _regime("inefficient_gen", NEVER) == "holds"
    assert _regime("equal_speed", TOGETHER) == "holds"


def test_simulation_regimes_fail_when_their_claim_is_false():
    assert _regime("grokking", TOGETHER) == "fails"              # no delay: test loss falls with train loss
    assert _regime("inefficient_gen", TOGETHER) == "fails"       # the inefficient C_gen generalised
    assert _regime("equal_speed", ROSE_LATE) == "fails"          # equal speeds, yet a grokking delay


def test_simulation_grokking_needs_the_delay_at_every_fraction():
    early = 4.7 + 2.0 * (1 - torch.exp(-T / 50)) - 6.65 * torch.sigmoid((T - 700) / 30)    # falls soon after the fit
    m = sim.regime_numbers(TRAIN, early, SIM)
    assert min(m["delay_factor"]) < SIM["min_delay_factor"] < max(m["delay_factor"])      # long only early on
    assert _regime("grokking", early) == "fails"


def _ungrok(after_loss, w_M_after=7.8, w_G_after=2.2):
    return {"w_G_before": 7.8, "w_M_before": 1.0, "w_G_after": w_G_after, "w_M_after": w_M_after,
            "test_loss_init": math.log(113), "test_loss_before": 0.044, "test_loss_after": after_loss}


def test_simulation_ungrokking_and_optimum():
    assert sim.judge_ungrok(_ungrok(5.7), SIM) == "holds"
    assert sim.judge_ungrok(_ungrok(0.3), SIM) == "fails"                      # test loss did not rise back
    assert sim.judge_ungrok(_ungrok(5.7, w_M_after=0.9, w_G_after=7.9), SIM) == "fails"   # the weight stayed on C_gen
    opt = {"ratio_predicted": 8.0, "ratio_change_last_10pct": 2e-4}
    assert sim.judge_optimum({**opt, "rel_err": 1e-4}, SIM) == "holds"
    assert sim.judge_optimum({**opt, "rel_err": 0.3}, SIM) == "fails"
    assert sim.judge_optimum({**opt, "rel_err": 1e-4, "ratio_change_last_10pct": 0.1}, SIM) == "inconclusive"


def test_simulation_verdict_in_both_directions():
    true = {"grokking": (TRAIN, ROSE_LATE), "inefficient_gen": (TRAIN, NEVER), "equal_speed": (TRAIN, TOGETHER)}
    opt = {"ratio_predicted": 8.0, "ratio_change_last_10pct": 2e-4, "rel_err": 1e-4}
    st = sim.statuses_at(true, _ungrok(5.7), opt, SIM)
    assert st == dict.fromkeys(st, "holds") and combine(list(st.values())) == "holds"
    false = {"grokking": (TRAIN, TOGETHER), "inefficient_gen": (TRAIN, TOGETHER), "equal_speed": (TRAIN, ROSE_LATE)}
    st = sim.statuses_at(false, _ungrok(0.3), {**opt, "rel_err": 0.3}, SIM)
    assert st == dict.fromkeys(st, "fails") and combine(list(st.values())) == "fails"


# ---------------------------------------------------------------- grokking

def _acc_history(t_train, t_test, last=3000, every=25, final_test=0.0, test_at_fit=0.0):
    """train accuracy 1 from t_train; test accuracy test_at_fit from t_train, 1 from t_test (the run stops
    there), else final_test at the end of the budget."""
    end = t_test if t_test is not None else last
    rows = []
    for s in range(0, end + 1, every):
        test = 1.0 if t_test is not None and s >= t_test else (test_at_fit if t_train is not None and s >= t_train else 0.0)
        rows.append({"step": s, "train_acc": 1.0 if t_train is not None and s >= t_train else 0.0, "test_acc": test,
                     "param_norm": 60.0})
    if t_test is None:
        rows[-1]["test_acc"] = final_test
    return rows


GROK = {"train_acc": 0.99, "test_acc": 0.99, "min_delay_factor": 2.0, "max_test_acc_at_fit": 0.5}


def test_grokking_holds_on_a_delay_and_fails_without_one():
    assert grokking.judge_histories([_acc_history(50, 1650), _acc_history(75, 1050)], ["stopped"] * 2, GROK) == "holds"
    assert grokking.judge_histories([_acc_history(50, 75)], ["stopped"], GROK) == "fails"        # test fit at once
    generalised_at_fit = _acc_history(50, 1650, test_at_fit=0.9)
    assert grokking.judge_histories([generalised_at_fit], ["stopped"], GROK) == "fails"
    assert grokking.judge_histories([_acc_history(50, None)], ["done"], GROK) == "inconclusive"   # budget ran out


# ---------------------------------------------------------------- mixture

def _loss_hist(train_loss, test_loss, train_acc, test_acc):
    return [{"step": 10 * i, "train_loss": a, "test_loss": b, "train_acc": c, "test_acc": d, "w_mem": 1.0, "w_gen": 1.0}
            for i, (a, b, c, d) in enumerate(zip(train_loss, test_loss, train_acc, test_acc))]


N = 27
GROKS = _loss_hist([3.9, 1.0, 0.05] + [0.01] * (N - 3), [3.9, 6.0, 8.0, 7.0] + [5.0] * (N - 5) + [0.5],
                   [0.0] + [1.0] * (N - 1), [0.0] * (N - 2) + [1.0] * 2)                 # rose, then fit at the end
TOGETHER_MIX = _loss_hist([3.9, 1.0, 0.05] + [0.01] * (N - 3), [3.9, 3.0, 2.0] + [0.5] * (N - 3),
                          [0.0] + [1.0] * (N - 1), [0.0] + [0.9] + [1.0] * (N - 2))       # fall together


def test_mixture_settings_in_both_directions():
    assert mx.setting_status(True, GROKS, mx.CRITERIA, 1.0) == "holds"
    assert mx.setting_status(True, TOGETHER_MIX, mx.CRITERIA, 1.0) == "fails"         # C_gen slow, yet no grokking
    assert mx.setting_status(False, TOGETHER_MIX, mx.CRITERIA, 1.0) == "holds"
    assert mx.setting_status(False, GROKS, mx.CRITERIA, 1.0) == "fails"               # equal speed, yet grokking
    per_seed = {0: {"premise": {"gen_test_acc": 1.0}, "slow_gen": {}, "equal_speed": {}}}
    true = {"slow_gen-seed0": GROKS, "equal_speed-seed0": TOGETHER_MIX}
    false = {"slow_gen-seed0": TOGETHER_MIX, "equal_speed-seed0": GROKS}
    assert mx.statuses_at(per_seed, true, mx.CRITERIA) == {"slow_gen": "holds", "equal_speed": "holds"}
    assert mx.statuses_at(per_seed, false, mx.CRITERIA) == {"slow_gen": "fails", "equal_speed": "fails"}
    no_premise = {0: {"premise": {"gen_test_acc": 1.0}}}                         # premise not met: no mixture runs
    assert mx.statuses_at(no_premise, {}, mx.CRITERIA) == dict.fromkeys(mx.SETTINGS, "inconclusive")


# ---------------------------------------------------------------- late weight decay

def _late(t_grok_late):
    h = _acc_history(50, t_grok_late) if t_grok_late else _acc_history(50, None)
    return h, "stopped" if t_grok_late else "done"


def test_late_weight_decay_in_both_directions():
    p, steps = {"T": 500, "T2": 250}, 3000
    true = {"always": (_acc_history(50, 1650), "stopped"), "never": (_acc_history(50, None), "done"),
            "late": (_acc_history(50, 2200), "stopped"), "removed": (_acc_history(50, None), "done")}
    st = lw.statuses_of({0: lw.judge_seed(true, p, steps, lw.CRITERIA)})
    assert st == dict.fromkeys(lw.SCHEDULES, "holds")
    false = {**true, "never": (_acc_history(50, 2500), "stopped"),                 # groks without weight decay
             "late": (_acc_history(50, None), "done"),                           # does not grok when on late
             "removed": (_acc_history(50, 2000), "stopped")}                     # groks after removal
    st = lw.statuses_of({0: lw.judge_seed(false, p, steps, lw.CRITERIA)})
    assert st == {"always": "holds", "never": "fails", "late": "fails", "removed": "fails"}
    assert combine(list(st.values())) == "fails"


# ---------------------------------------------------------------- factors: every study's claims

def _run(t_train, t_test, last=3000, final_test=0.0):
    h = _acc_history(t_train, t_test, last=last, final_test=final_test)
    return {"history": h, "status": "stopped" if t_test is not None else "done", "seconds": 1.0}


NEVER_RUN = (50, None)
WORLDS = {   # study -> (claims true, claims false): level -> (t_train, t_test) for both seeds; unlisted levels (50, 1650)
    "fraction": ({"frac=0.3": NEVER_RUN, "frac=0.5": (50, 1650), "frac=0.7": (50, 600), "p=113_frac=0.05": NEVER_RUN},
                 {"frac=0.3": (50, 600), "frac=0.5": (50, 1650), "frac=0.7": (50, 2500), "p=113_frac=0.05": (100, 1000)}),
    "architectures": ({"transformer-1": (75, 1000), "transformer-2": (75, 2000), "rnn": (50, 1500), "birnn": (200, 250)},
                      {"transformer-1": (75, 1000), "transformer-2": (75, 900), "mlp": (50, 75), "rnn": (50, 75),
                       "birnn": (50, 1650)}),
    "operators": ({"add": (100, 1200), "div": NEVER_RUN, "add-xopy=": (100, 800), "add-xy": (100, 1500),
                   "div-mlp": (50, 2500), "K=2": (50, 1450), "K=3": (50, 575), "K=4": (50, 200)},
                  {"add": (100, 1200), "div": (100, 1000), "add-xopy=": (100, 1500), "add-xy": (100, 500),
                   "div-mlp": (50, 1600), "K=2": (50, 500), "K=3": (50, 1500), "K=4": (50, 2500)}),
    "optimizers": ({"adamw-minibatch": (50, 1000), "sgd-nesterov": NEVER_RUN, "rmsprop": NEVER_RUN, "nadam": NEVER_RUN,
                    "adam-l2": (50, 1500)},
                   {"adamw": (50, 75), "adamw-minibatch": (50, 1000), "sgd-nesterov": (25, 50), "rmsprop": (25, 50),
                    "nadam": (25, 50), "adam-l2": (50, 275)}),
    "regularizers": ({"wd-init": (50, 2800), "dropout": (50, 3500), "grad-noise": (50, 3600), "weight-noise": (50, 3700),
                      "none": NEVER_RUN},
                     {"wd-zero": (50, 3000), "wd-init": (50, 1000), "dropout": (50, 1000), "grad-noise": (50, 1000),
                      "weight-noise": (50, 1000), "none": (50, 1000)}),
}


def _study(name, world):
    spec = factors.studies()[name]
    last = 4000 if name == "regularizers" else 3000
    per_level = {lv: {seed: factors.seed_summary(_run(*world.get(lv, (50, 1650)), last=last), GROK) for seed in (0, 1)}
                 for lv in spec["levels"]["quick"]}
    return factors.judge_claims(spec["claims"], per_level, GROK)


@pytest.mark.parametrize("study", sorted(WORLDS))
def test_factors_study_holds_where_its_claims_are_true(study):
    claims = _study(study, WORLDS[study][0])
    assert [c["status"] for c in claims] == ["holds"] * len(claims), [(c["claim"], c["status"]) for c in claims]
    assert combine([c["status"] for c in claims]) == "holds"


@pytest.mark.parametrize("study", sorted(WORLDS))
def test_factors_study_fails_where_its_claims_are_false(study):
    claims = _study(study, WORLDS[study][1])
    assert [c["status"] for c in claims] == ["fails"] * len(claims), [(c["claim"], c["status"]) for c in claims]
    assert combine([c["status"] for c in claims]) == "fails"


def test_every_study_has_both_worlds():
    assert set(WORLDS) == set(factors.studies())


# ---------------------------------------------------------------- data efficiency

def _curve(name, f50, ci):
    return de.Curve(name, [0.3, 0.5], [0.0, 1.0], [0, 1], None, f50, ci)


def test_data_efficiency_in_both_directions():
    claims = [{"config": "wd", "better_than": "adam"}]
    true = {"wd": _curve("wd", 0.40, (0.38, 0.42)), "adam": _curve("adam", None, None)}
    assert de.verdict_status(de.judge(true, claims)) == "holds"
    true = {"wd": _curve("wd", 0.30, (0.28, 0.32)), "adam": _curve("adam", 0.5, (0.48, 0.52))}
    assert de.verdict_status(de.judge(true, claims)) == "holds"
    false = {"wd": _curve("wd", 0.50, (0.48, 0.52)), "adam": _curve("adam", 0.3, (0.28, 0.32))}    # needs more data
    assert de.verdict_status(de.judge(false, claims)) == "fails"
    false = {"wd": _curve("wd", None, None), "adam": _curve("adam", 0.4, (0.38, 0.42))}            # never generalises
    assert de.verdict_status(de.judge(false, claims)) == "fails"
    assert de.verdict_status([]) == "inconclusive"


# ---------------------------------------------------------------- semi-grokking

SEMI = sg.CRITERIA


def _semi_history(plateau_from=None, grok_at=None, last=6000):
    rows = []
    for s in range(0, last + 1, 25):
        test = 0.0
        if plateau_from is not None and s >= plateau_from:
            test = 0.5
        if grok_at is not None and s >= grok_at:
            test = 1.0
        rows.append({"step": s, "train_acc": 1.0 if s >= 50 else 0.0, "test_acc": test})
        if test >= 1.0:
            break
    return rows


def test_semigrokking_in_both_directions():
    assert sg.classify(_semi_history(plateau_from=500), SEMI)[0] == "semi"
    assert sg.judge([_semi_history(plateau_from=500), _semi_history(grok_at=1500)], SEMI) == "holds"
    assert sg.judge([_semi_history(plateau_from=500, grok_at=4000)], SEMI) == "holds"      # transient
    assert sg.judge([_semi_history(grok_at=1500), _semi_history(grok_at=2000), _semi_history()], SEMI) == "fails"
    assert sg.judge([_semi_history(plateau_from=5800)], SEMI) == "fails"                   # too short to be a plateau


def test_semigrokking_tiny_run_reports_its_sensitivity(tmp_path, monkeypatch):
    from circuits import api
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    v = api.run_protocol("semigrokking", "quick", out=tmp_path / "r", overrides=[
        "task.p=13", "model.d_model=16", "model.d_mlp=32", "train.steps=100", "params.sizes=[0.5]",
        "params.workers=1", "seeds=[0]"])
    sens = v["measured"]["sensitivity"]
    assert set(sens) == set(sg.SENSITIVITY) and sens["min_semi_runs"]["1"] == v["status"]
    assert v["status"] == "fails" and v["measured"]["n_semi_or_transient"] == 0   # 100 steps: nothing to hold
