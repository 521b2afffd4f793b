"""Unit tests of the ungrokking / semi-grokking machinery (the phenomena themselves are judged by
the slow `circuits check` test)."""
import pytest
import torch

from circuits.cache import trained
from circuits.config import Config, ModelConfig, OptimConfig, TaskConfig, TrainConfig
from protocols.semigrokking import CRITERIA, classify, dcrit_from_store
from protocols.ungrokking import Job, subset_size, ungrok


@pytest.fixture
def cfg():
    return Config(task=TaskConfig(p=11, frac=0.6), model=ModelConfig(arch="mlp", d_model=16, d_mlp=32),
                  optim=OptimConfig(lr=3e-3), train=TrainConfig(steps=30, eval_every=10), seeds=[0])


def test_cache_trains_once_then_loads(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    a, path = trained(cfg, 0, quiet=True)
    mtime = path.stat().st_mtime_ns
    b, path_b = trained(cfg, 0, quiet=True)
    assert path == path_b and path.stat().st_mtime_ns == mtime
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    assert b.result.history == a.result.history
    c, path_c = trained(cfg, 1, quiet=True)                   # another seed: another entry
    assert path_c != path


def test_ungrok_job_trains_on_the_subset(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    _, path = trained(cfg, 0, quiet=True)
    job = Job(cfg, 0, str(path), size=10, subset_seed=0, weight_decay=1.0, steps=20, eval_every=10,
              checkpoint=str(tmp_path / "job" / "checkpoint.pt"))
    h = ungrok(job)
    assert [r["step"] for r in h] == [0, 10, 20]
    assert h == ungrok(job)                                  # finished: read back from its checkpoint


def test_subset_size():
    assert subset_size(0.1, 47 * 47, 1000) == 221 and subset_size(500, 47 * 47, 1000) == 500
    assert subset_size(0.9, 47 * 47, 1000) == 1000                # never more than the training split


def _h(test):
    return [{"step": i * 250, "train_acc": 1.0, "test_acc": t} for i, t in enumerate(test)]


def test_semigrokking_classes():
    crit = {**CRITERIA, "min_plateau_steps": 1000}
    assert classify(_h([0.0] * 10), crit)[0] == "memorised"
    assert classify(_h([0.0, 0.5, 0.52, 0.5, 0.51, 0.5, 0.5]), crit)[0] == "semi"
    assert classify(_h([0.0, 0.5, 0.52, 0.5, 0.51, 0.5, 0.5, 0.995]), crit)[0] == "transient"
    assert classify(_h([0.0, 0.3, 0.6, 0.995]), crit)[0] == "grokked"
    assert classify(_h([0.0, 0.25, 0.4, 0.55, 0.7, 0.85]), crit)[0] == "unresolved"


def test_dcrit_from_store(cfg, tmp_path):
    """semigrokking reads a stored D_crit only from a dcrit run of the same setup (task but its
    fraction, model, optimiser), never one of another model or optimiser."""
    import json
    from dataclasses import replace
    from circuits.config import to_dict
    import yaml

    def store(name, c, d_crit):
        d = tmp_path / "dcrit" / name
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(yaml.safe_dump(to_dict(c)))
        (d / "verdict.json").write_text(json.dumps({"measured": {"p": c.task.p, "arch": c.model.arch, "D_crit": d_crit}}))
        return str(d)

    other_frac = store("a", replace(cfg, task=replace(cfg.task, frac=0.5)), 42.0)
    assert dcrit_from_store(cfg, tmp_path) == (42.0, other_frac)           # the training fraction aside
    store("b", replace(cfg, model=replace(cfg.model, d_model=32)), 7.0)      # same p and arch, another model
    store("c", replace(cfg, optim=replace(cfg.optim, lr=1e-2)), 8.0)         # another learning rate
    assert dcrit_from_store(cfg, tmp_path) == (42.0, other_frac)
    assert dcrit_from_store(replace(cfg, task=replace(cfg.task, p=13)), tmp_path) is None


@pytest.mark.parametrize("task", [{"op": "/"}, {"k": 3}], ids=["division", "three-operands"])
def test_sizes_are_counted_over_the_tasks_own_inputs(task):
    """A size D means D training inputs whatever the task: efficiency, semigrokking (and dcrit's sweep,
    which uses its jobs) and ungrokking read fractions and counts over all of the task's inputs
    (p (p - 1) for division, p^k for k operands), not over p^2."""
    from dataclasses import replace
    from circuits.api import resolve
    from circuits.tasks import make_dataset, n_inputs
    from protocols import efficiency, semigrokking
    from protocols import ungrokking as ug

    cfg = resolve("efficiency", "quick", p=11, overrides=["params.mem_sizes=[50]", "params.gen_sizes=[0.5]"])
    cfg = replace(cfg, task=replace(cfg.task, **task), seeds=[0])
    n_all = n_inputs(cfg.task)
    assert n_all != 11 ** 2
    got = {j.kind: len(make_dataset(j.cfg.task).train_idx) for j in efficiency.jobs_for(cfg)}
    assert got == {"mem": 50, "gen": round(0.5 * n_all)}
    for job in semigrokking.scratch_jobs(cfg, [60]):
        assert len(make_dataset(job.cfg.task).train_idx) == 60
    ucfg = resolve("ungrokking", "quick", p=11, overrides=["params.sizes=[0.2]"])
    ucfg = replace(ucfg, task=replace(ucfg.task, **task))
    assert {j.size for j in ug.jobs_for(ucfg, 0, "x", 10_000)} == {round(0.2 * n_all)}


def test_efficiency_trains_seed_by_seed_so_a_cut_off_run_leaves_whole_seeds():
    """The C_mem and C_gen networks of one seed all come before any of the next seed's: a
    multi-seed run killed part-way has finished seeds a `--set seeds=[...]` run reads back whole
    (size-major order left every seed part-done)."""
    from circuits.api import resolve
    from protocols import efficiency

    cfg = resolve("efficiency", "quick", p=11, overrides=["params.mem_sizes=[30,40]", "params.gen_sizes=[60,80]",
                                                          "seeds=[0,1,2]"])
    jobs = efficiency.jobs_for(cfg)
    assert [j.seed for j in jobs] == [0] * 4 + [1] * 4 + [2] * 4
    assert [(j.kind, j.size) for j in jobs[:4]] == [("mem", 30), ("mem", 40), ("gen", 60), ("gen", 80)]
