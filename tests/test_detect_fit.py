import numpy as np
import pytest

from circuits.config import protocol_fields
from circuits.detect import combine, first_step, grokking_times, plateaus
from circuits.errors import CircuitsError
from circuits.fit import fit_transition, intervals_overlap


def _h(test, train=None, every=100):
    train = train or [1.0] * len(test)
    return [{"step": i * every, "test_acc": t, "train_acc": r} for i, (t, r) in enumerate(zip(test, train))]


def test_grokking_times():
    h = _h([0.0, 0.1, 0.1, 0.2, 0.5, 0.995], train=[0.2, 1.0, 1.0, 1.0, 1.0, 1.0])
    t = grokking_times(h)
    assert (t["t_train"], t["t_test"], t["delay"], t["delay_factor"], t["test_acc_at_fit"]) == (100, 500, 400, 5.0, 0.1)
    assert first_step(h, "test_acc", 0.15, below=True) == 0 and first_step(h, "test_acc", 0.15, after=0, below=True) == 100


def test_plateaus_need_flatness_and_duration():
    flat = _h([0.0] + [0.5, 0.52, 0.49, 0.51, 0.5, 0.5] + [1.0])
    assert plateaus(flat, "test_acc", 0.2, 0.8, min_steps=400, max_spread=0.15) == [(100, 600)]
    rise = _h([0.0, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 1.0])       # slow rise through the band
    assert plateaus(rise, "test_acc", 0.2, 0.8, min_steps=400, max_spread=0.15) == []
    assert plateaus(rise, "test_acc", 0.2, 0.8, min_steps=400) == [(100, 600)]   # without the flatness test
    assert plateaus(flat, "test_acc", 0.2, 0.8, min_steps=600, max_spread=0.15) == []


def test_combine():
    assert combine(["holds", "holds"]) == "holds"
    assert combine(["holds", "inconclusive"]) == "inconclusive"
    assert combine(["inconclusive", "fails"]) == "fails"
    assert combine(["fails", "diverged"]) == "diverged"


def test_logistic_fit_recovers_the_midpoint_with_an_interval():
    rng = np.random.default_rng(0)
    D = np.tile([100, 150, 220, 330, 500, 750, 1100], 4)
    seeds = np.repeat([0, 1, 2, 3], 7)
    acc = 1 / (1 + np.exp(-(np.log(D) - np.log(400)) / 0.2)) + rng.normal(0, 0.03, len(D))
    t = fit_transition(D, acc, seeds)
    assert t.D_mid == pytest.approx(400, rel=0.05)
    assert t.ci[0] < t.D_mid < t.ci[1] and t.ci[1] / t.ci[0] < 1.2
    assert fit_transition(D, np.full(len(D), 0.5)).D_mid is None      # flat: no transition


def test_intervals_overlap():
    assert intervals_overlap([(1, 3), (2, 4)]) is True
    assert intervals_overlap([(1, 2), (3, 4)]) is False
    assert intervals_overlap([(1, 2), None]) is None


def test_protocol_fields_validate():
    d = {"steps": 10, "lr": 0.1, "sizes": None, "on": True}
    assert protocol_fields({"steps": 20.0, "sizes": [1, 2]}, d, "params") == {"steps": 20, "lr": 0.1, "sizes": [1, 2], "on": True}
    with pytest.raises(CircuitsError, match="params.nope"):
        protocol_fields({"nope": 1}, d, "params")
    with pytest.raises(CircuitsError, match="params.steps"):
        protocol_fields({"steps": 2.5}, d, "params")
    with pytest.raises(CircuitsError, match="params.on"):
        protocol_fields({"on": 1}, d, "params")
