"""The late-weight-decay protocol (protocols/late_weight_decay.py): schedules -> phases, the weight
decay each phase really applies, the judging of each schedule on synthetic numbers, and one small
real run (an MLP on (x + y) mod 23)."""
import dataclasses

import pytest

from circuits.config import Config, ModelConfig, OptimConfig, TaskConfig, TrainConfig
from circuits.errors import CircuitsError
from circuits.experiment import build
from circuits.train import train
from protocols import late_weight_decay as lw

CRIT = lw.CRITERIA
P = {"T": 300, "T2": 100}


def test_schedules_map_to_phases_of_weight_decay():
    def wds(schedule):
        return [(ph.steps, ph.weight_decay) for ph in lw.phases(schedule, 1000, 0.7, P)]
    assert wds("always") == [(1000, 0.7)]
    assert wds("never") == [(1000, 0.0)]
    assert wds("late") == [(300, 0.0), (700, 0.7)]
    assert wds("removed") == [(100, 0.7), (900, 0.0)]
    assert all(not ph.fresh_optimizer for s in lw.SCHEDULES for ph in lw.phases(s, 1000, 0.7, P))
    assert [lw.switch_step(s, P) for s in lw.SCHEDULES] == [0, 0, 300, 100]
    with pytest.raises(CircuitsError):
        lw.phases("sometimes", 1000, 0.7, P)


def test_each_phase_applies_its_weight_decay(tiny_cfg):
    """Same seed: `late` follows `never` exactly until T and leaves it after; `removed` follows `always` until T2."""
    cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, steps=40, eval_every=10))
    p = {"T": 20, "T2": 20}

    def history(schedule):
        model, data = build(cfg, 0, "cpu")
        h = train(model, data, cfg.optim, cfg.train, phases=lw.phases(schedule, 40, 1.0, p), seed=0).history
        return {r["step"]: r["param_norm"] for r in h}

    never, late, always, removed = (history(s) for s in ("never", "late", "always", "removed"))
    for a, b in ((never, late), (always, removed)):
        assert [a[s] for s in (10, 20)] == [b[s] for s in (10, 20)]
        assert a[40] != b[40]
    assert late[40] < never[40] and removed[40] > always[40]          # decay on shrinks the weights


def m(t_fit=50, t_grok=None, switch=None, at_switch=None, final=0.0, diverged=False):
    return {"t_fit": t_fit, "t_grok": t_grok, "switch": switch, "test_acc_at_switch": at_switch,
            "final_test_acc": final, "diverged": diverged}


def test_judging_each_schedule():
    j = lambda s, x, base=1000, steps=3000: lw.judge(s, x, base, steps, CRIT)  # noqa: E731
    assert j("always", m(t_grok=1000, final=1.0)) == "holds"
    assert lw.judge("always", m(), None, 3000, CRIT) == "inconclusive"
    assert j("never", m()) == "holds"
    assert j("never", m(t_grok=2500, final=1.0)) == "fails"
    assert j("never", m(final=0.7)) == "fails"                                 # generalising, not low
    assert j("never", m(), steps=1400) == "inconclusive"                      # window < 1.5 x baseline
    assert lw.judge("never", m(), None, 3000, CRIT) == "inconclusive"         # no baseline to compare
    assert j("late", m(t_grok=2200, switch=500, at_switch=0.0, final=1.0)) == "holds"
    assert j("late", m(switch=500, at_switch=0.0, final=0.1)) == "fails"
    assert j("late", m(switch=500, at_switch=0.0), steps=1900) == "inconclusive"     # window 1400 < 1500
    assert j("late", m(t_grok=400, switch=500, final=1.0)) == "inconclusive"  # grokked before T
    assert j("late", m(t_grok=900, switch=500, at_switch=0.6, final=1.0)) == "inconclusive"
    assert j("removed", m(switch=250, at_switch=0.0)) == "holds"
    assert j("removed", m(t_grok=2000, switch=250, at_switch=0.0, final=1.0)) == "fails"
    assert j("removed", m(t_grok=200, switch=250, final=1.0)) == "inconclusive"  # grokked before T2
    assert j("removed", m(switch=1000, at_switch=0.7, final=0.9)) == "inconclusive"
    assert j("removed", m(switch=250, at_switch=0.0, diverged=True)) == "diverged"


def test_bad_params_are_one_line_errors():
    cfg = Config(train=TrainConfig(steps=1000))
    for bad in ({"T": 0}, {"T2": 1000}, {"T": -5}, {"nonsense": 1}):
        with pytest.raises(CircuitsError):
            lw.params(dataclasses.replace(cfg, params=bad))
    with pytest.raises(CircuitsError):
        lw.params(dataclasses.replace(cfg, optim=OptimConfig(weight_decay=0.0)))


def test_small_real_run(tmp_path):
    """MLP on (x + y) mod 23, 80% of the pairs: the baseline groks by ~900 steps."""
    cfg = Config(protocol="late-weight-decay", task=TaskConfig(p=23, frac=0.8),
                 model=ModelConfig(arch="mlp", d_model=32, d_mlp=128), optim=OptimConfig(lr=3e-3),
                 train=TrainConfig(steps=2000, eval_every=25, threads=1), seeds=[0],
                 params={"T": 300, "T2": 100, "workers": 1})
    v = lw.run(cfg, tmp_path)
    s = v.measured["per_seed"][0]
    assert s["always"]["t_grok"] is not None and s["late"]["t_grok"] > 300
    assert s["never"]["t_grok"] is None and s["never"]["final_test_acc"] <= 0.5
    assert s["removed"]["test_acc_at_switch"] <= 0.5 and s["removed"]["t_grok"] is None
    assert v.measured["statuses"] == dict.fromkeys(lw.SCHEDULES, "holds") and v.status == "holds"
    assert (tmp_path / "figure.png").exists() and (tmp_path / "verdict.json").exists()
    assert (tmp_path / "jobs" / "late-seed0" / "checkpoint.pt").exists()
