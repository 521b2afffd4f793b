from pathlib import Path

import pytest
import torch

from circuits.config import Config, ModelConfig, OptimConfig, TaskConfig, TrainConfig
from circuits.experiment import build
from circuits.stack import stack_key, train_stacked
from circuits.train import train


def _cfgs(arch):
    model = ModelConfig(arch=arch, d_model=32, d_head=8, d_mlp=64)
    out = []
    for seed, frac, wd, lr in [(0, 0.3, 1.0, 1e-3), (1, 0.5, 0.3, 3e-3), (2, 0.4, 0.0, 2e-3)]:
        out.append(Config(task=TaskConfig(p=23, frac=frac, split_seed=seed), model=model,
                          optim=OptimConfig(lr=lr, weight_decay=wd, warmup=3),
                          train=TrainConfig(steps=12, eval_every=4), seeds=[seed]))
    return out


@pytest.mark.parametrize("arch", ["transformer", "mlp"])
def test_stacked_training_equals_separate_runs(arch):
    cfgs = _cfgs(arch)
    assert len({stack_key(c) for c in cfgs}) == 1
    separate = []
    for c in cfgs:
        model, data = build(c, c.seeds[0], "cpu")
        separate.append((train(model, data, c.optim, c.train, seed=c.seeds[0]), model))
    built = [build(c, c.seeds[0], "cpu") for c in cfgs]
    stacked = train_stacked([m for m, _ in built], [d for _, d in built], cfgs, [None] * 3, torch.device("cpu"))
    for (ref, ref_model), res, (model, _) in zip(separate, stacked, built):
        assert [r["step"] for r in res.history] == [r["step"] for r in ref.history] == [0, 4, 8, 12]
        for a, b in zip(res.history, ref.history):
            for k in b:
                if k != "time":
                    assert a[k] == pytest.approx(b[k], abs=1e-5, rel=1e-5), k
        for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
            torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5, msg=name)


def test_a_member_stops_on_its_own_criterion():
    cfgs = _cfgs("mlp")
    built = [build(c, c.seeds[0], "cpu") for c in cfgs]
    stops = [None, lambda row: row["step"] >= 4, None]
    res = train_stacked([m for m, _ in built], [d for _, d in built], cfgs, stops, torch.device("cpu"))
    assert res[1].status == "stopped" and res[1].step == 4 and res[1].history[-1]["step"] == 4
    assert res[0].status == res[2].status == "done" and res[0].step == 12


def test_unstackable_configs():
    c = _cfgs("mlp")[0]
    c.optim.batch_size = 8
    assert stack_key(c) is None


def test_stacked_members_get_the_protocols_extra_metrics():
    """grokking's Fourier strengths (extra_metrics) per member, equal to separate runs' to 1e-5."""
    from functools import partial

    from circuits.fourier import strength_metrics

    extra = (partial(strength_metrics, per_frequency=True),)
    cfgs = _cfgs("transformer")
    separate = []
    for c in cfgs:
        model, data = build(c, c.seeds[0], "cpu")
        separate.append(train(model, data, c.optim, c.train, seed=c.seeds[0], extra_metrics=extra))
    built = [build(c, c.seeds[0], "cpu") for c in cfgs]
    stacked = train_stacked([m for m, _ in built], [d for _, d in built], cfgs, [None] * 3, torch.device("cpu"),
                            extra_metrics=extra)
    for ref, res in zip(separate, stacked):
        assert "gen_logit_k1" in ref.history[-1] and "train_gen_logit" in ref.history[-1]
        for a, b in zip(res.history, ref.history):
            assert set(a) == set(b)
            for k in b:
                if k != "time":
                    assert a[k] == pytest.approx(b[k], abs=1e-5, rel=1e-5), k


def test_a_stacked_seed_saved_as_its_checkpoint_is_resumed_not_retrained(tmp_path, capsys):
    from circuits.experiment import save_trained, seed_checkpoint, train_seed

    cfgs = _cfgs("mlp")
    built = [build(c, c.seeds[0], "cpu") for c in cfgs]
    results = train_stacked([m for m, _ in built], [d for _, d in built], cfgs, [None] * 3, torch.device("cpu"))
    for c, (model, data), res in zip(cfgs, built, results):
        save_trained(c, c.seeds[0], tmp_path / f"run{c.seeds[0]}", model, data, res)
    capsys.readouterr()
    for c, (model, _), res in zip(cfgs, built, results):
        run_dir = tmp_path / f"run{c.seeds[0]}"
        before = seed_checkpoint(run_dir, c.seeds[0]).stat().st_mtime_ns
        t = train_seed(c, c.seeds[0], run_dir, quiet=True)
        assert t.result.history == res.history and seed_checkpoint(run_dir, c.seeds[0]).stat().st_mtime_ns == before
        for p, q in zip(t.model.parameters(), model.parameters()):
            assert torch.equal(p, q)
    assert capsys.readouterr().err == ""


def _scratch_jobs(steps=60):
    from circuits.api import resolve
    from protocols import semigrokking

    cfg = resolve("semigrokking", "quick", p=23, overrides=["model.d_model=32", "model.d_head=8", "model.d_mlp=64",
                                                            "optim.lr=3e-3", f"train.steps={steps}",
                                                            "train.eval_every=10", "seeds=[0,1]"])
    return semigrokking.scratch_jobs(cfg, [150, 260])


def test_runs_from_scratch_stacked_into_the_cache_are_the_separate_runs(tmp_path, monkeypatch):
    """The GPU lever of semigrokking and `dcrit --method sweep` (run_scratch(stack=True)): the runs
    train as one stacked model straight into their cache entries, and read back they are the runs
    the worker processes train, to 1e-5 (forced on here: on a CPU stacking is off by default)."""
    from circuits.cache import prestack
    from protocols import semigrokking

    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "stacked"))
    jobs = semigrokking.live_to(_scratch_jobs(), tmp_path / "live")
    assert prestack([(j.cfg, j.seed, *semigrokking.stop_rule(j.cfg), j.live) for j in jobs]) == 4
    assert all(semigrokking.entry(j).exists() for j in jobs)
    stacked = semigrokking.run_scratch(jobs, 1, "stacked", stack=True)      # all read back: nothing left to stack
    for j, h in zip(jobs, stacked):                                         # each run's rows in its live CSV
        lines = Path(j.live).read_text().splitlines()
        assert len(lines) == 1 + len(h) and lines[1].startswith("0,") and lines[-1].startswith(f"{h[-1]['step']},")
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "separate"))
    separate = semigrokking.run_scratch(_scratch_jobs(), 1, "separate")
    for a_hist, b_hist in zip(stacked, separate):
        assert [r["step"] for r in a_hist] == [r["step"] for r in b_hist]
        for a, b in zip(a_hist, b_hist):
            for k in b:
                if k != "time":
                    assert a[k] == pytest.approx(b[k], abs=1e-5, rel=1e-5), k


def test_prestack_leaves_a_part_trained_or_busy_run_to_its_own_process(tmp_path, monkeypatch):
    import multiprocessing as mp

    from circuits.cache import prestack
    from protocols import semigrokking

    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    jobs = _scratch_jobs()
    part = semigrokking.entry(jobs[0]).parent
    part.mkdir(parents=True)
    (part / "checkpoint.pt").write_bytes(b"resumes on its own")
    busy = semigrokking.entry(jobs[1]).parent
    ready, release = mp.get_context("spawn").Event(), mp.get_context("spawn").Event()
    holder = mp.get_context("spawn").Process(target=_hold_lock, args=(str(busy / ".lock"), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        assert prestack([(j.cfg, j.seed, *semigrokking.stop_rule(j.cfg)) for j in jobs]) == 2
    finally:
        release.set()
        holder.join(30)
    assert [semigrokking.entry(j).exists() for j in jobs] == [False, False, True, True]


def _hold_lock(path, ready, release):
    from circuits.store import locked

    with locked(path):
        ready.set()
        release.wait(30)
