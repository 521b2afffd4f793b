import numpy as np
import pytest

from circuits.config import protocol_fields
from circuits.detect import combine, first_step, grokking_times, plateaus
from circuits.errors import CircuitsError
from circuits.fit import (MIN_SEEDS, Estimate, agree, below, compare, fit_transition, inside, intervals_overlap,
                          over_seeds, ratio, sensitivity, status, within)


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


def _logistic_world(n_seeds, mid=400.0, width=0.2, noise=0.03, seed=0):
    rng = np.random.default_rng(seed)
    D = np.tile([100, 150, 220, 330, 500, 750, 1100], n_seeds)
    seeds = np.repeat(np.arange(n_seeds), 7)
    acc = 1 / (1 + np.exp(-(np.log(D) - np.log(mid)) / width)) + rng.normal(0, noise, len(D))
    return D, acc, seeds


def test_logistic_fit_recovers_the_midpoint_with_an_interval():
    D, acc, seeds = _logistic_world(5)
    t = fit_transition(D, acc, seeds)
    assert t.D_mid == pytest.approx(400, rel=0.05) and t.width == pytest.approx(0.2, rel=0.3)
    assert t.ci[0] < t.D_mid < t.ci[1] and t.ci[1] / t.ci[0] < 1.2
    assert t.mid.n_seeds == 5 and t.n_boot >= 150 and t.mid.n_distinct > 10       # resamples, and distinct ones
    assert t.width_est.ci[0] < 0.2 < t.width_est.ci[1]
    assert t.seed_range[0] <= t.seed_range[1]
    assert fit_transition(D, np.full(len(D), 0.5)).D_mid is None      # flat: no transition


def test_fewer_than_min_seeds_give_a_seed_range_not_an_interval():
    assert MIN_SEEDS == 5
    D, acc, seeds = _logistic_world(4)
    t = fit_transition(D, acc, seeds)
    assert t.D_mid == pytest.approx(400, rel=0.05)
    assert t.ci is None and t.mid.ci is None and t.n_boot == 0                     # no interval from 4 seeds
    lo, hi = t.seed_range
    assert lo < hi and t.mid.n_seeds == 4
    d = t.mid.to_dict()
    assert "ci" not in d and "not a confidence interval" in d["seed_range_is"]
    one = fit_transition(D[:7], acc[:7], seeds[:7])
    assert one.seed_range is None and one.ci is None and one.mid.n_seeds == 1


def test_over_seeds_counts_distinct_resamples():
    rows = [{"seed": s, "x": float(s)} for s in range(6)]
    est = over_seeds(rows, lambda r: r["seed"], lambda rs: {"mean": float(np.mean([r["x"] for r in rs]))}, n_boot=300)
    e = est["mean"]
    assert e.value == pytest.approx(2.5) and e.seed_range == (0.0, 5.0)
    assert e.ci[0] < 2.5 < e.ci[1] and e.n_boot == 300 and 10 < e.n_distinct <= 300


def test_inside_uses_the_interval_when_there_is_one():
    assert inside(0.05, -0.1, 0.1) is True and inside(0.2, -0.1, 0.1) is False       # plain numbers
    assert inside(Estimate(0.0, 5, ci=(-0.05, 0.08)), -0.1, 0.1) is True
    assert inside(Estimate(0.0, 5, ci=(-0.15, 0.05)), -0.1, 0.1) is None             # straddles the edge
    assert inside(Estimate(-0.3, 5, ci=(-0.35, -0.2)), -0.1, 0.1) is False
    # a seed range is never gated on: the point estimate decides
    assert inside(Estimate(0.05, 2, seed_range=(-0.3, 0.4)), -0.1, 0.1) is True
    assert inside(Estimate(None), 0, 1) is None


def test_below_and_compare():
    a, b = Estimate(100, 5, ci=(95, 105)), Estimate(130, 5, ci=(120, 140))
    assert below(a, b) is True and below(b, a) is False and compare(a, b) == "below" and compare(b, a) == "above"
    c = Estimate(110, 5, ci=(100, 125))
    assert below(a, c) is None and compare(a, c) == "indistinct"                      # intervals overlap
    # without intervals: point estimates and a relative margin (ranges not gated on)
    p, q = Estimate(100, 2, seed_range=(80, 140)), Estimate(120, 2, seed_range=(70, 130))
    assert below(p, q, margin=0.1) is True and below(q, p, margin=0.1) is False
    assert below(p, Estimate(105, 2), margin=0.1) is None
    assert below(-0.1, 0.3, margin=0.1, relative=False) is True and below(0.2, 0.25, 0.1, relative=False) is None
    assert compare(None, b) is None


def test_within_and_agree():
    # intervals on both: an equivalence test on the ratio's interval
    a, b = Estimate(500, 5, ci=(490, 510)), Estimate(520, 5, ci=(510, 530))
    assert within(a, b, 0.15) is True
    assert within(a, Estimate(700, 5, ci=(680, 720)), 0.15) is False
    assert within(a, Estimate(560, 5, ci=(520, 610)), 0.15) is None                    # can't tell
    # point estimates: within the tolerance holds even when the seed ranges do not overlap
    assert within(Estimate(500, 2, seed_range=(495, 505)), Estimate(540, 2, seed_range=(535, 545)), 0.15) is True
    assert within(Estimate(500, 2, seed_range=(495, 505)), Estimate(640, 2, seed_range=(635, 645)), 0.15) is False
    # a seed spread wider than the tolerance: agreement not resolvable from point estimates, and a
    # disagreement must exceed the tolerance and the spread together
    assert within(Estimate(500, 2, seed_range=(350, 650)), Estimate(520, 2), 0.15) is None
    assert within(Estimate(500, 2, seed_range=(400, 600)), Estimate(650, 2), 0.15) is None     # 1.3 < 1.15 * 1.5
    assert within(Estimate(500, 2, seed_range=(400, 600)), Estimate(900, 2), 0.15) is False
    assert agree([500, 520, 540], 0.15) is True and agree([500, 520, 700], 0.15) is False
    assert agree([500, None], 0.15) is None


def test_ratio_and_status():
    r = ratio(Estimate(400, 5, ci=(380, 420)), Estimate(800, 5, ci=(760, 840)))
    assert r.value == pytest.approx(0.5) and r.ci == pytest.approx((380 / 840, 420 / 760))
    r2 = ratio(Estimate(400, 5, ci=(380, 420)), Estimate(800, 2, seed_range=(780, 820)))
    assert r2.ci is None and r2.seed_range == pytest.approx((380 / 820, 420 / 780)) and r2.n_seeds == 2
    assert [status(x) for x in (True, False, None)] == ["holds", "fails", "inconclusive"]


def test_sensitivity_rejudges_at_neighbouring_thresholds():
    crit = {"tol": 0.2, "acc_min": 0.9}
    judge = lambda c: {"close": status(0.25 <= c["tol"]), "acc": status(0.93 >= c["acc_min"])}
    s = sensitivity(judge, crit, {"tol": "close", "acc_min": "acc", "absent": "acc"}, complement=("acc_min",))
    assert s["tol"] == {"0.1": "fails", "0.15": "fails", "0.2": "fails", "0.3": "holds", "0.4": "holds"}
    assert s["acc_min"] == {"0.95": "fails", "0.925": "holds", "0.9": "holds", "0.85": "holds", "0.8": "holds"}
    assert "absent" not in s


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
