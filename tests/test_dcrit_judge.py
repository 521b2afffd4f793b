"""The D_crit verdict on synthetic worlds: per-method estimates given directly to the judge (no
training). Claims: every method estimates D_crit; ungrokking < efficiency < from scratch; the
hysteresis ratio ungrokking / from scratch within the paper's bound; weight-decay independence."""
import pytest

from circuits.fit import Estimate
from protocols import dcrit

CRIT = dict(dcrit.CRITERIA)


def est(value, ci=None, seed_range=None, n_seeds=None, rise=0.9, points=((100, 0.0), (3000, 1.0))):
    n = n_seeds or (5 if ci else 2)
    e = Estimate(value, n, ci=ci, seed_range=seed_range, n_boot=200 if ci else 0, n_distinct=90 if ci else 0)
    return {"est": e, "D_crit": value, "rise": rise, "points": list(points)}


def world(u=400, e=700, s=900, wds=(1.0,), drift=1.0, ci=False):
    """Estimates at each weight decay, scaled by drift**i; intervals of +-3% with ci, else 2-seed ranges."""
    out = {}
    for method, v in (("ungrokking", u), ("efficiency", e), ("sweep", s)):
        out[method] = {}
        for i, wd in enumerate(wds):
            x = v * drift**i
            out[method][wd] = est(x, ci=(0.97 * x, 1.03 * x)) if ci else est(x, seed_range=(0.98 * x, 1.02 * x))
    return out


def judged(ests, crit=CRIT):
    claims = dcrit.judge(ests, crit)
    from circuits.detect import combine
    return combine(list(claims.values())), claims


def test_true_world_holds():
    status, claims = judged(world(u=400, e=700, s=900))
    assert status == "holds" and set(claims) == {dcrit.ESTIMATE, dcrit.ORDER, dcrit.HYSTERESIS}
    status, claims = judged(world(u=400, e=700, s=900, ci=True))             # with intervals too
    assert status == "holds"


def test_inverted_order_fails():
    status, claims = judged(world(u=400, e=1100, s=900))                     # efficiency above from scratch
    assert claims[dcrit.ORDER] == "fails" and status == "fails"
    status, claims = judged(world(u=400, e=1100, s=900, ci=True))
    assert claims[dcrit.ORDER] == "fails"


def test_weak_hysteresis_fails():
    # the previous session's MLP numbers: 528 < 711 < 812, ratio 0.65 against the paper's "less than half"
    status, claims = judged(world(u=528, e=711, s=812))
    assert claims[dcrit.ORDER] == "holds" and claims[dcrit.HYSTERESIS] == "fails" and status == "fails"
    crit = {**CRIT, "hysteresis_ratio_max": 0.75}
    assert judged(world(u=528, e=711, s=812), crit)[0] == "holds"


def test_close_estimates_are_inconclusive():
    status, claims = judged(world(u=400, e=850, s=900))                      # 6% apart: within the 10% margin
    assert claims[dcrit.ORDER] == "inconclusive" and status == "inconclusive"


def test_no_rise_fails_and_extrapolation_is_inconclusive():
    ests = world()
    ests["sweep"][1.0]["rise"] = 0.2
    assert judged(ests)[1][dcrit.ESTIMATE] == "fails"
    ests = world()
    ests["sweep"][1.0] = est(5000, seed_range=(4900, 5100), points=((100, 0.0), (3000, 0.6)))
    assert judged(ests)[1][dcrit.ESTIMATE] == "inconclusive"
    ests = world()
    ests["efficiency"][1.0] = est(None, rise=None)
    status, claims = judged(ests)
    assert claims[dcrit.ESTIMATE] == "inconclusive" and claims[dcrit.ORDER] == "inconclusive"
    ests = world(u=528, e=711, s=812)
    ests["sweep"][1.0]["rise"] = 0.2                  # no transition from scratch: nothing to compare with
    status, claims = judged(ests)
    assert claims[dcrit.ESTIMATE] == "fails" and claims[dcrit.HYSTERESIS] == claims[dcrit.ORDER] == "inconclusive"


def test_weight_decay_independence():
    wds = (0.3, 1.0, 3.0)
    status, claims = judged(world(wds=wds, drift=1.05))                     # 10% over the decade: agree
    assert claims[dcrit.WD] == "holds" and status == "holds"
    status, claims = judged(world(wds=wds, drift=1.17))                     # x1.37, as measured: disagree
    assert claims[dcrit.WD] == "fails" and status == "fails"
    status, claims = judged(world(wds=wds, drift=1.07, ci=True))            # ratio's interval straddles 1.15
    assert claims[dcrit.WD] == "inconclusive"


def test_weight_decay_test_does_not_gate_on_range_overlap():
    # two 2-seed estimates 8% apart whose seed ranges do not overlap: within the tolerance, so they agree
    ests = {"sweep": {1.0: est(800, seed_range=(795, 805)), 2.0: est(864, seed_range=(860, 868))}}
    assert judged(ests)[1][dcrit.WD] == "holds"
    # wide seed ranges (29%): 40% apart cannot be told from the seed spread, 62% apart can
    ests = {"sweep": {1.0: est(800, seed_range=(700, 900)), 2.0: est(1120, seed_range=(1000, 1140))}}
    assert judged(ests)[1][dcrit.WD] == "inconclusive"
    ests = {"sweep": {1.0: est(800, seed_range=(700, 900)), 2.0: est(1300, seed_range=(1200, 1400))}}
    assert judged(ests)[1][dcrit.WD] == "fails"


def test_summarise_reports_sensitivity_and_estimates():
    from circuits.config import Config, TaskConfig
    cfg = Config(protocol="dcrit", task=TaskConfig(p=47))
    ests = world(u=528, e=711, s=812)
    for per_wd in ests.values():
        for e in per_wd.values():
            e.update({**dcrit.estimate(e["est"], 47**2), "histories": {}, "fit": None})
    measured, status = dcrit.summarise(cfg, ests, [1.0], CRIT)
    assert status == "fails" and measured["hysteresis_ratio"] == pytest.approx(528 / 812)
    assert measured["ordering_holds"] is True and measured["all_intervals_overlap"] is None
    sens = measured["sensitivity"]["hysteresis_ratio_max"]
    assert sens == {"0.25": "fails", "0.375": "fails", "0.5": "fails", "0.75": "holds", "1": "holds"}
    assert measured["sensitivity"]["order_margin"]["0.2"] == "inconclusive"     # 711 -> 812 is only 14%
    assert "wd_rel_tol" not in measured["sensitivity"]                          # one weight decay: not judged
    row = measured["methods"]["sweep"]["1.0"]
    assert row["n_seeds"] == 2 and "not a confidence interval" in row["estimate"]["seed_range_is"]
    assert [c["claim"] for c in measured["claims"]] == [dcrit.ESTIMATE, dcrit.ORDER, dcrit.HYSTERESIS]


def test_yaml_rationale_and_check_variants():
    from test_ungrokking_judge import _yaml_consistent

    _yaml_consistent("dcrit", dcrit, [dcrit.ESTIMATE, dcrit.ORDER, dcrit.HYSTERESIS, dcrit.WD])
