import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from circuits.config import Config, ModelConfig, TaskConfig, TrainConfig
from circuits.errors import CircuitsError
from circuits.sweep import SlurmOptions, grid, parse_axes, run_slurm, run_sweep
from circuits.progress import Bar
from procs import alive as _alive, children as _children, kill_leftovers as _kill_leftovers, wait_until as _wait_until



def _cfg(steps=30, seeds=(0, 1)):
    return Config(task=TaskConfig(p=11), model=ModelConfig(d_model=16, d_head=8, d_mlp=32),
                  train=TrainConfig(steps=steps, eval_every=10), seeds=list(seeds))


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_parse_axes_and_grid(tmp_path):
    axes = parse_axes(["task.frac=0.3,0.5", "data.p=7,11", "optim.weight_decay=1"])
    assert axes == {"task.frac": [0.3, 0.5], "data.p": [7, 11], "optim.weight_decay": [1]}
    pts = grid(_cfg(), axes, tmp_path)
    assert len(pts) == 2 * 2 * 1 * 2
    p = pts[-1]
    assert (p.cfg.task.frac, p.cfg.task.p, p.cfg.optim.weight_decay, p.cfg.seeds) == (0.5, 11, 1.0, [1])
    assert p.run_dir == tmp_path / "points" / "task.frac=0.5,data.p=11,optim.weight_decay=1,seed=1"
    with pytest.raises(CircuitsError, match="unknown config key"):
        grid(_cfg(), {"model.nope": [1]}, tmp_path)
    with pytest.raises(CircuitsError, match="--sweep expects"):
        parse_axes(["task.frac"])


@pytest.mark.parametrize("values", [["0.5", "0.5"], ["0.5", "0.50"], ["0.5", "0.6", "0.50"]])
def test_a_value_listed_twice_is_refused(tmp_path, values):
    axes = parse_axes([f"task.frac={','.join(values)}"])
    with pytest.raises(CircuitsError, match="--sweep task.frac lists the value .* twice"):
        grid(_cfg(), axes, tmp_path)
    assert len(grid(_cfg(), {"task.frac": [0.5, 0.6]}, tmp_path)) == 4   # distinct values: no error


def _metrics(run_dir):
    return {(r["run"], r["step"], r["split"], r["metric"]): float(r["value"]) for r in _rows(run_dir / "metrics.csv")}


def test_workers_give_the_same_results_as_one_process(tmp_path):
    cfg = _cfg()
    cfg.sweep = {"task.frac": [0.4, 0.6]}
    run_sweep(cfg, tmp_path / "one", workers=1, quiet=True)
    run_sweep(cfg, tmp_path / "two", workers=2, quiet=True)
    a, b = _rows(tmp_path / "one" / "sweep.csv"), _rows(tmp_path / "two" / "sweep.csv")
    assert len(a) == len(b) == 4
    for name in (r["point"] for r in a):
        ma, mb = _metrics(tmp_path / "one" / "points" / name), _metrics(tmp_path / "two" / "points" / name)
        assert ma.keys() == mb.keys()
        for k in ma:   # thread counts differ (2 vs 1 per process): equal up to float reduction order
            assert ma[k] == pytest.approx(mb[k], rel=1e-4, abs=1e-5), (name, k)


def test_point_order_does_not_matter(tmp_path):
    cfg = _cfg(seeds=(0,))
    cfg.sweep = {"task.frac": [0.4, 0.6]}
    run_sweep(cfg, tmp_path / "a", workers=1, quiet=True)
    cfg.sweep = {"task.frac": [0.6, 0.4]}
    run_sweep(cfg, tmp_path / "b", workers=1, quiet=True)
    for name in ("task.frac=0.4,seed=0", "task.frac=0.6,seed=0"):
        assert _metrics(tmp_path / "a" / "points" / name) == _metrics(tmp_path / "b" / "points" / name)


STEPS = 200
SWEEP = ["run", "grokking", "--p", "11", "--set", "model.d_model=16", "--set", "model.d_mlp=32",
         "--set", "task.op=/",   # not addition: no Fourier metrics at each evaluation, a faster run
         "--set", f"train.steps={STEPS}", "--set", "train.eval_every=20", "--set", "train.checkpoint_every=20",
         "--seeds", "1", "--sweep", "task.frac=0.2,0.3,0.4", "--workers", "2"]


def _env():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("CIRCUITS_IN_WORKER", None)
    return env


def _checkpoint(point: Path) -> dict | None:
    """A point's checkpoint (seed 0), or None if it has none yet."""
    import torch

    path = point / "seed0" / "checkpoint.pt"
    try:
        return torch.load(path, weights_only=False) if path.exists() else None
    except (FileNotFoundError, EOFError, RuntimeError):   # replaced while read: next poll
        return None


def _partway(out: Path) -> dict[str, dict]:
    """{point: its checkpoint} for the unfinished points that have one."""
    found = {}
    for point in out.glob("points/*"):
        ck = None if (point / "verdict.json").exists() else _checkpoint(point)
        if ck is not None:
            found[point.name] = ck
    return found


def _ready_to_kill(out: Path) -> bool:
    """A point finished, and another one checkpointed at most half way: with 3 points on 2 workers,
    the third starts once one of the first two is done, so it is far from finishing when the kill lands."""
    if not list(out.glob("points/*/verdict.json")):
        return False
    return any(ck["result"]["step"] <= STEPS // 2 for ck in _partway(out).values())


def test_kill_9_then_same_command_resumes_without_recomputing(tmp_path):
    out = tmp_path / "sweep"
    args = [sys.executable, "-m", "circuits", *SWEEP, "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    children: set[int] = set()
    try:
        assert _wait_until(lambda: _ready_to_kill(out) or proc.poll() is not None, 240, every=0.02)
        assert proc.poll() is None, "the sweep finished before a point was checkpointed part-way"
        children = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)              # the main process alone: its workers must follow
        proc.wait(timeout=10)
        assert _wait_until(lambda: not any(_alive(p) for p in children), 5), \
            f"workers outlived the sweep: {[p for p in children if _alive(p)]}"
    finally:
        _kill_leftovers(children | _children(proc.pid))
        proc.kill()
        proc.wait(timeout=10)
    done = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("points/*/verdict.json")}
    partway = _partway(out)
    midway = [name for name, ck in partway.items() if ck["result"]["step"] < STEPS]
    assert 1 <= len(done) < 3 and midway, f"the kill came too late: {sorted(done)} finished"
    assert not (out / "sweep.csv").exists()

    r = subprocess.run(args, capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 0, r.stderr
    for name, mtime in done.items():   # finished points were not recomputed or rewritten
        assert (out / "points" / name / "verdict.json").stat().st_mtime_ns == mtime
    for name, ck in partway.items():   # the others resumed from their checkpoints, not from step 0
        before = ck["result"]["history"]
        after = _checkpoint(out / "points" / name)["result"]["history"]
        assert before and after[: len(before)] == before, name    # the same rows, with the same times
        assert len(after) > len(before) or name not in midway, name
        assert after[-1]["step"] == STEPS
    rows = _rows(out / "sweep.csv")
    assert sorted(r["task.frac"] for r in rows) == ["0.2", "0.3", "0.4"]
    assert not list(out.rglob("*.tmp"))


def test_slurm_job_array_script(tmp_path):
    submitit = pytest.importorskip("submitit")
    from submitit.slurm.test_slurm import mocked_slurm

    cfg = _cfg(seeds=(0, 1, 2))
    pts = grid(cfg, {"task.frac": [0.4, 0.6]}, tmp_path)
    with mocked_slurm():
        jobs = run_slurm(pts, tmp_path, SlurmOptions(partition="gpu", time_min=30, cpus=4, gpus=1, parallelism=3),
                         Bar("", quiet=True), wait=False)
        assert len(jobs) == 6
    (script_path,) = (tmp_path / "slurm").rglob("*_submission.sh")   # one sbatch script for the array
    script = script_path.read_text()
    assert "#SBATCH --array=0-5%3" in script
    assert "#SBATCH --partition=gpu" in script and "#SBATCH --cpus-per-task=4" in script
    assert "#SBATCH --gpus-per-node=1" in script and "#SBATCH --time=30" in script


def test_slurm_path_runs_for_real_with_submitits_local_cluster(tmp_path):
    pytest.importorskip("submitit")
    cfg = _cfg(steps=20, seeds=(0,))
    cfg.sweep = {"task.frac": [0.4, 0.6]}
    path = run_sweep(cfg, tmp_path, executor="slurm", slurm=SlurmOptions(cluster="local", cpus=1), quiet=True)
    assert len(_rows(path)) == 2


def test_a_preempted_or_timed_out_point_is_requeued_as_itself(tmp_path):
    """Slurm signals a job before preemption or its time limit; submitit then asks the callable for
    its checkpoint: the same point again (the run resumes from its checkpoints), and the sbatch
    script asks for that signal."""
    submitit = pytest.importorskip("submitit")
    from submitit.slurm.test_slurm import mocked_slurm

    from circuits.slurm import PointJob
    cfg = _cfg(seeds=(0,))
    (point,) = grid(cfg, {"task.frac": [0.4]}, tmp_path)
    again = PointJob().checkpoint(point)
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert isinstance(again.function, PointJob) and again.args == (point,)
    with mocked_slurm():
        run_slurm([point], tmp_path, SlurmOptions(time_min=30), Bar("", quiet=True), wait=False)
    (script_path,) = (tmp_path / "slurm").rglob("*_submission.sh")
    assert "#SBATCH --signal=USR2@" in script_path.read_text()
