"""figures/partial_ungrokking.py fits an unfinished run's transition per weight decay, from finished
runs only, and never across weight decays."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = [100, 200, 400, 800, 1600]


def _module():
    spec = importlib.util.spec_from_file_location("partial_ungrokking", ROOT / "figures" / "partial_ungrokking.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _runs(wd, acc_by_size, finished=True):
    return [{"wd": wd, "D": d, "subset_seed": s, "test_acc": min(1.0, a + 0.01 * s), "finished": finished}
            for d, a in acc_by_size.items() for s in range(3)]


def test_each_weight_decay_is_fitted_on_its_own_runs():
    fits = _module().fits
    early = dict(zip(SIZES, [0.05, 0.1, 0.9, 0.99, 1.0]))        # transition between 200 and 400
    late = dict(zip(SIZES, [0.05, 0.05, 0.1, 0.2, 0.95]))         # between 800 and 1,600
    out = fits(_runs(1.0, early) + _runs(3.0, late), SIZES)
    assert set(out) == {"wd 1", "wd 3"}
    assert 200 < out["wd 1"]["D_mid"] < 400 and 800 < out["wd 3"]["D_mid"] < 1600
    assert out["wd 1"]["runs"] == out["wd 3"]["runs"] == 15


def test_no_fit_until_every_size_has_a_finished_run():
    fits = _module().fits
    acc = dict(zip(SIZES, [0.05, 0.1, 0.9, 0.99, 1.0]))
    runs = _runs(0.3, {d: a for d, a in acc.items() if d != 1600}) + _runs(0.3, {1600: 0.5}, finished=False)
    assert fits(runs, SIZES) == {"wd 0.3": None}                   # 1,600 still training: not fitted yet
    done = _runs(0.3, acc)
    assert fits(done + runs, SIZES)["wd 0.3"]["runs"] == 15 + 12   # still-training runs are left out
