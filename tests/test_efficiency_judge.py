"""The efficiency verdict on synthetic worlds: norms at the target logit given directly to the judge
(no training). The claim: C_mem's norm rises with D, C_gen's is flat, C_gen's exponent clearly below."""
import numpy as np
import pytest

from protocols import efficiency as ef

CRIT = dict(ef.CRITERIA)
MEM_D, GEN_D = (300, 420, 600), (900, 1300, 1800)          # ln ranges 0.69 each


def world(mem_exp=0.3, gen_exp=0.0, n_seeds=5, noise=0.01, mem_D=MEM_D, gen_D=GEN_D, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    rows = []
    for s in range(n_seeds):
        for kind, sizes, exp, c in (("mem", mem_D, mem_exp, 3.0), ("gen", gen_D, gen_exp, 45.0)):
            for D in sizes:
                base = c * D**exp if kind == "mem" else c * (D / 1000) ** exp
                rows.append({"kind": kind, "D": D, "seed": s, "final_train_acc": 1.0,
                             "final_test_acc": 0.01 if kind == "mem" else 1.0,
                             "norm_at_target": float(base * np.exp(rng.normal(0, noise))), "kappa": 3.0,
                             "logit": 20.0, "final_norm": 1.0})
    return rows


def verdict(rows, crit=CRIT):
    status, m = ef.analyse(rows, crit, n_boot=200, n_all=47 ** 2)
    return status, {c["claim"]: c["status"] for c in m["claims"]}, m


def test_true_world_holds():
    status, claims, m = verdict(world())
    assert status == "holds" and set(claims.values()) == {"holds"} and len(claims) == 3
    assert m["mem_exponent"] == pytest.approx(0.3, abs=0.03) and abs(m["gen_exponent"]) < 0.05
    lo, hi = m["gen_exponent_ci"]
    assert -0.1 < lo < hi < 0.1 and m["n_seeds"] == 5
    assert m["mem_exponent_est"]["n_distinct_resamples"] > 10
    assert m["D_crit"] is not None and m["D_crit_ci"] is not None
    assert m["sensitivity"]["gen_exponent_band"]["0.1"] == "holds"


def test_gen_growing_like_mem_fails():
    # C_gen's norm grows as fast as C_mem's: not flat, not below (the old 15%-over-1.6x rule let ~0.3 pass)
    status, claims, _ = verdict(world(gen_exp=0.3))
    assert claims[ef.GEN_FLAT] == "fails" and claims[ef.GEN_BELOW] == "inconclusive" and status == "fails"
    status, claims, _ = verdict(world(gen_exp=0.5))
    assert claims[ef.GEN_BELOW] == "fails"


def test_mem_not_rising_fails():
    status, claims, m = verdict(world(mem_exp=-0.2))
    assert claims[ef.MEM_RISES] == "fails" and status == "fails" and m["D_crit"] is None


def test_gen_exponent_at_the_band_edge_is_inconclusive():
    status, claims, m = verdict(world(gen_exp=-0.1, noise=0.02))
    lo, hi = m["gen_exponent_ci"]
    assert lo < -0.1 < hi
    assert claims[ef.GEN_FLAT] == "inconclusive" and status == "inconclusive"


def test_narrow_gen_range_cannot_show_flatness():
    status, claims, m = verdict(world(gen_D=(1000, 1200)))             # ln 0.18 against C_mem's 0.69
    assert m["gen_log_range"] < m["mem_log_range"]
    assert claims[ef.GEN_FLAT] == "inconclusive"


def test_two_seeds_give_ranges_judged_on_points():
    status, claims, m = verdict(world(n_seeds=2))
    assert m["gen_exponent_ci"] is None and "seed_range" in m["gen_exponent_est"]
    assert "not a confidence interval" in m["gen_exponent_est"]["seed_range_is"]
    assert status == "holds"


def test_unusable_networks_are_left_out():
    rows = world()
    for r in rows:
        if r["kind"] == "gen" and r["D"] == 900:
            r["final_test_acc"] = 0.5                               # did not generalise: not a C_gen network
    status, m = ef.analyse(rows, CRIT, n_boot=20, n_all=47 ** 2)
    assert m["n_gen"] == 10 and len(m["left_out"]) == 5


def test_yaml_rationale_and_check_variants():
    from test_ungrokking_judge import _yaml_consistent

    _yaml_consistent("efficiency", ef, [ef.MEM_RISES, ef.GEN_FLAT, ef.GEN_BELOW])
