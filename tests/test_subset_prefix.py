"""A subset run under one step cap decides the same run under another (the fixed and the
equal-decay-budget conventions of ungrokking ask for both): a smaller cap's history is the prefix of
a larger cap's, and a run that stopped by its rule before its cap is the same under any larger one.
Shown by training both for real, then read back without training."""
import os
import shutil
from pathlib import Path

import pytest

from protocols import subset_runs as sr


def _rows(h):
    return [{k: v for k, v in r.items() if k != "time"} for r in h]     # wall time is not part of the run


@pytest.fixture
def grokked(tmp_path, monkeypatch):
    from circuits.cache import trained
    from circuits.config import Config, ModelConfig, OptimConfig, TaskConfig, TrainConfig

    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    cfg = Config(task=TaskConfig(p=11, frac=0.6), model=ModelConfig(arch="mlp", d_model=16, d_mlp=32),
                 optim=OptimConfig(lr=3e-3), train=TrainConfig(steps=30, eval_every=10), seeds=[0])
    _, path = trained(cfg, 0, quiet=True)
    return cfg, str(path)


def job(cfg, path, folder, steps, settle=None, other=None):
    return sr.Job(cfg, 0, path, size=12, subset_seed=1, weight_decay=3.0, steps=steps, eval_every=10,
                  checkpoint=str(folder / "checkpoint.pt"), settle=settle,
                  other_caps=((other.steps, other.checkpoint),) if other else ())


@pytest.mark.parametrize("settle", [None, {"decay_times": 0.1, "acc_tol": 1.0}], ids=["to-cap", "settles"])
def test_a_capped_run_is_the_prefix_of_a_longer_one(grokked, tmp_path, settle):
    cfg, path = grokked
    long = job(cfg, path, tmp_path / "long", 90, settle)
    short = job(cfg, path, tmp_path / "short", 40, settle)
    h_long, h_short = sr.ungrok(long), sr.ungrok(short)                  # both trained for real
    assert _rows(sr.prefix(h_long, 40)) == _rows(h_short)
    if settle:                                                          # 0.1 decay times = 11 steps: stops at 20
        assert h_long[-1]["step"] == h_short[-1]["step"] == 20
    else:
        assert h_long[-1]["step"] == 90 and h_short[-1]["step"] == 40

    derived = job(cfg, path, tmp_path / "derived", 40, settle, other=long)
    assert sr.ungrok(derived) == sr.prefix(h_long, 40)
    assert not os.path.exists(derived.checkpoint)                       # read, not trained
    assert sr.network_of(short) == Path(short.checkpoint) and sr.network_of(derived) is None
    os.makedirs(tmp_path / "derived")
    shutil.copy(long.checkpoint, derived.checkpoint)                    # a stale try's checkpoint there:
    assert sr.network_of(derived) is None                               # not the derived run's network
    # the other way: a larger cap reads a smaller cap's run only if that one stopped by its rule
    up = job(cfg, path, tmp_path / "up", 90, settle, other=short)
    assert sr.ungrok(up) == h_short if settle else sr.ungrok(up)[-1]["step"] == 90   # the short run's own record
    assert os.path.exists(up.checkpoint) == (settle is None)            # trained only where it had to be


def test_no_prefix_without_an_evaluation_at_the_cap_or_of_another_job(grokked, tmp_path):
    cfg, path = grokked
    long = job(cfg, path, tmp_path / "long", 90)
    h = sr.ungrok(long)
    assert sr.prefix(h, 45) is None and sr.prefix(None, 40) is None and sr.prefix([], 40) is None
    odd = job(cfg, path, tmp_path / "odd", 45, other=long)
    assert sr.ungrok(odd)[-1]["step"] == 45 and os.path.exists(odd.checkpoint)   # trained
    other = sr.Job(**{**vars(job(cfg, path, tmp_path / "other", 40, other=long)), "subset_seed": 2})
    sr.ungrok(other)
    assert os.path.exists(other.checkpoint)                             # the longer record is another job's


def test_jobs_name_the_other_conventions_cap():
    from circuits import api
    from protocols import ungrokking as ug

    cfg = api.resolve("ungrokking", "paper", arch="transformer",
                      overrides=["params.weight_decays=[0.3,1,3]", "params.equal_decay_budget=false"])
    fixed = {j.name: j for j in ug.jobs_for(cfg, 0, "/c/abc/model.pt", 3830)}
    cfg = api.resolve("ungrokking", "paper", arch="transformer", overrides=["params.weight_decays=[0.3,1,3]"])
    equal = {j.name: j for j in ug.jobs_for(cfg, 0, "/c/abc/model.pt", 3830)}
    j = "seed0-wd3-D390-s0"
    assert (equal[j].steps, fixed[j].steps) == (10000, 30000)
    assert equal[j].other_caps == ((30000, fixed[j].checkpoint),) and fixed[j].other_caps == ((10000, equal[j].checkpoint),)
    j = "seed0-wd0.3-D390-s0"
    assert (fixed[j].steps, equal[j].steps) == (30000, 100000) and fixed[j].other_caps == ((100000, equal[j].checkpoint),)
    j = "seed0-wd1-D390-s0"
    assert fixed[j].checkpoint == equal[j].checkpoint and fixed[j].other_caps == ()


def test_a_run_finished_under_any_cap_is_found_by_a_config_with_another(tmp_path, monkeypatch):
    """The caps index: a run recorded under the fixed 30,000-step cap is read by a config whose caps
    are 100,000 (the paper's fixed budget: neither convention of that config names 30,000) where it
    decides the run (it stopped by its rule), and trained where it does not (it ran to its cap)."""
    from circuits import api
    from circuits.store import write_json
    from protocols import ungrokking as ug

    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    base = ["params.weight_decays=[1,3]", "params.equal_decay_budget=false"]
    short = {j.name: j for j in ug.jobs_for(api.resolve("ungrokking", "paper", arch="transformer", overrides=base),
                                            0, "/c/abc/model.pt", 3830)}
    stopped, capped = short["seed0-wd1-D390-s0"], short["seed0-wd3-D490-s1"]
    assert stopped.steps == capped.steps == 30000
    hist = {n: [{"step": 0, "test_acc": 0.9}, {"step": s, "test_acc": 0.05}] for n, s in
            ((stopped.name, 12000), (capped.name, 30000))}
    write_json(sr.record_path(stopped), {"job": stopped.name, "status": "stopped", "history": hist[stopped.name]})
    write_json(sr.record_path(capped), {"job": capped.name, "status": "done", "history": hist[capped.name]})
    long_cfg = api.resolve("ungrokking", "paper", arch="transformer", overrides=[*base, "params.steps=100000"])
    before = {j.name: j for j in ug.jobs_for(long_cfg, 0, "/c/abc/model.pt", 3830)}
    assert sr.recorded(before[stopped.name]) is None                    # not yet indexed: not found
    assert sr.recorded(stopped) == hist[stopped.name] and sr.recorded(capped) == hist[capped.name]   # read: indexed
    assert sr.known_caps(stopped) == [30000] and sr.known_caps(capped) == [30000]
    long = {j.name: j for j in ug.jobs_for(long_cfg, 0, "/c/abc/model.pt", 3830)}
    assert long[stopped.name].steps == 100000 and (30000, stopped.checkpoint) in long[stopped.name].other_caps
    assert sr.recorded(long[stopped.name]) == hist[stopped.name]        # stopped by its rule: the same run
    assert sr.recorded(long[capped.name]) is None                       # ran to 30,000: 100,000 must train
    assert sr.known_caps(long[stopped.name]) == [30000]                 # read from another cap: not its own


def test_a_cache_it_cannot_write_is_read_without_its_caps_index(tmp_path):
    """Noting a cap is an optimisation: where the index cannot be written (a read-only cache; here a
    file where its folder should be, which stops root too), the record is still read."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "history.json").write_text('{"job": "seed0-wd1-D12-s1", "status": "stopped", "history": [{"step": 20}]}')
    (tmp_path / "caps").write_text("not a folder")
    j = sr.Job(None, 0, "", size=12, subset_seed=1, weight_decay=1.0, steps=40, eval_every=10,
               checkpoint=str(folder / "checkpoint.pt"), caps_index=str(tmp_path / "caps" / "x.json"))
    assert sr.recorded(j) == [{"step": 20}] and sr.known_caps(j) == []


def test_a_run_that_hit_a_smaller_cap_continues_from_its_checkpoint(grokked, tmp_path, capsys):
    """The same subset run asked for under a larger cap starts from the smaller cap's final
    checkpoint, not step 0, and ends as the run trained unbroken to the larger cap."""
    cfg, path = grokked
    unbroken = sr.ungrok(job(cfg, path, tmp_path / "unbroken", 90))
    short = job(cfg, path, tmp_path / "short", 40)
    h_short = sr.ungrok(short)
    up = job(cfg, path, tmp_path / "up", 90, other=short)
    assert sr.steps_to_train(up) == 50 and sr.steps_to_train(short) == 0
    capsys.readouterr()
    h_up = sr.ungrok(up)
    assert f"continuing {up.name} from its 40-step cap to 90 steps" in capsys.readouterr().err
    assert h_up[: len(h_short)] == h_short                              # wall times too: read, not trained
    assert _rows(h_up) == _rows(unbroken)
    off = job(cfg, path, tmp_path / "off", 35)                          # a cap between evaluations: from step 0
    sr.ungrok(off)
    up2 = job(cfg, path, tmp_path / "up2", 90, other=off)
    assert sr.steps_to_train(up2) == 90 and _rows(sr.ungrok(up2)) == _rows(unbroken)
