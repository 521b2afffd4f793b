import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from circuits.config import Config, ModelConfig, TaskConfig, TrainConfig
from circuits.errors import CircuitsError
from circuits.sweep import SlurmOptions, grid, parse_axes, run_slurm, run_sweep
from circuits.progress import Bar

TINY = ["--p", "11", "--set", "model.d_model=16", "--set", "model.d_mlp=32", "--set", "train.eval_every=10"]


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


def _cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "circuits", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def test_kill_9_then_same_command_completes_without_recomputing(tmp_path):
    out = tmp_path / "sweep"
    args = ["run", "grokking", *TINY, "--set", "train.steps=400", "--set", "train.checkpoint_every=50",
            "--seeds", "1", "--sweep", "task.frac=0.3,0.4,0.5,0.6", "--workers", "2", "--out", str(out)]
    proc = _cli(args)
    deadline = time.time() + 240
    while time.time() < deadline:
        done = list(out.glob("points/*/verdict.json"))
        if len(done) >= 1 or proc.poll() is not None:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("points/*/verdict.json")}
    assert 1 <= len(done) < 4, f"the kill came too late to test resuming: {len(done)} points finished"
    assert not (out / "sweep.csv").exists()
    r = subprocess.run([sys.executable, "-m", "circuits", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for name, mtime in done.items():   # finished points were not recomputed or rewritten
        assert (out / "points" / name / "verdict.json").stat().st_mtime_ns == mtime
    rows = _rows(out / "sweep.csv")
    assert sorted(r["task.frac"] for r in rows) == ["0.3", "0.4", "0.5", "0.6"]
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
