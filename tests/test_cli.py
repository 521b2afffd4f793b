import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import circuits
from circuits import cli as cli_module


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "circuits", *args], capture_output=True, text=True, cwd=cwd,
                          env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin", **_pythonpath()})


def _pythonpath():
    import os
    return {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HOME")}


@pytest.mark.parametrize("args,msg", [
    (["run", "nope"], "unknown protocol 'nope'"),
    (["run", "grokking", "--set", "task.op=/", "--p", "12"], "division needs a prime p"),
    (["run", "grokking", "--frac", "1.5"], "task.frac must be in (0, 1]"),
    (["run", "grokking", "--set", "model.nope=1"], "unknown config key 'model.nope'"),
    (["run", "grokking", "--set", "task.p=abc"], "bad value for task.p"),
    (["run", "grokking", "--arch", "cnn"], "--arch must be one of"),
    (["run", "grokking", "--preset", "huge"], "no preset 'huge'"),
    (["run", "grokking", "--config", "/does/not/exist.yaml"], "config file not found"),
    (["run", "grokking", "--bogus"], "No such option: --bogus"),
    (["run", "grokking", "--seeds", "x"], "--seeds"),
    (["run", "semigrokking", "--set", "params.stack=1"], "bad value for params.stack: 1"),
    (["dcrit", "--set", "params.sweep.stack=3"], "bad value for params.sweep.stack: 3"),
])
def test_user_errors_are_one_line_exit_2(args, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                       # in-process (the entry point itself: test_list_...)
    with pytest.raises(SystemExit) as e:
        cli_module.main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: ") and msg in err
    assert not list(tmp_path.iterdir())               # nothing started


def test_list_names_protocols_and_presets():
    r = cli("list")
    assert r.returncode == 0 and "grokking" in r.stdout and "quick" in r.stdout and "paper" in r.stdout


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path, capsys, monkeypatch):
    """Kill a real run (SIGKILL) once it has checkpointed, re-run the same command: training goes on
    from the checkpoint's step, not from 0, keeps the history before it, and writes the verdict; a
    third run reads the verdict back."""
    from circuits import experiment
    from circuits.store import load_torch

    seed_checkpoint = getattr(experiment, "seed_checkpoint",                    # where train_seed checkpoints
                              lambda run_dir, seed: Path(run_dir) / f"seed{seed}" / "checkpoint.pt")

    out, steps = tmp_path / "r", 300
    args = ["run", "grokking", "--p", "11", "--seeds", "1", "--set", f"train.steps={steps}",
            "--set", "train.eval_every=25", "--set", "train.checkpoint_every=25", "--set", "model.d_model=16",
            "--set", "model.d_mlp=32", "--out", str(out)]
    env = {"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
           "CIRCUITS_CACHE": str(tmp_path / "cache"), **_pythonpath()}
    ck = seed_checkpoint(out, 0)
    proc = subprocess.Popen([sys.executable, "-m", "circuits", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        proc.kill()                                   # SIGKILL: no clean-up of any kind
        proc.wait()
    assert ck.exists() and not (out / "verdict.json").exists(), "the run ended before it could be killed"
    killed = load_torch(ck)["result"]
    at = killed["step"]
    assert 0 < at < steps

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli_module.main(args)
    assert e.value.code == 0
    shown = [int(n) for n in re.findall(rf"(\d+)/{steps}", capsys.readouterr().err)]
    assert shown and shown[0] > at                    # the progress starts after the checkpoint, not at 0/300
    files = {p.name for p in out.iterdir()}
    assert {"config.yaml", "meta.json", "metrics.csv", "figure.png", "figure.pdf", "verdict.json"} <= files
    v = json.loads((out / "verdict.json").read_text())
    assert v["protocol"] == "grokking" and v["status"] in ("holds", "fails", "inconclusive")
    resumed = load_torch(ck)["result"]["history"]
    before = [r for r in resumed if r["step"] <= at]
    assert before == killed["history"]                # carried over (same times), not trained again
    assert resumed[-1]["step"] > at
    metrics = (out / "metrics.csv").read_text().splitlines()
    assert any(line.startswith(f"seed0,{at},") for line in metrics)
    assert any(line.startswith("seed0,0,") for line in metrics)

    stamp = (out / "verdict.json").stat().st_mtime_ns
    with pytest.raises(SystemExit) as e:
        cli_module.main(args)                         # finished: the verdict is read back, not recomputed
    assert e.value.code == 0 and (out / "verdict.json").stat().st_mtime_ns == stamp


def test_python_api(tmp_path):
    v = circuits.run("grokking", p=11, out=tmp_path / "api", overrides=["train.steps=20", "model.d_model=16"])
    assert v["protocol"] == "grokking" and v["status"] in ("holds", "fails", "inconclusive")
    assert (tmp_path / "api" / "verdict.json").exists()


@pytest.mark.parametrize("args", [["--help"], ["list"], ["run", "--help"], ["dcrit", "--help"]])
def test_help_and_list_do_not_import_torch_or_the_protocols(args):
    """`circuits --help`, `list` and each command's --help answer without torch or the protocol modules (they
    made --help take seconds); the registry reads names and claims from the sources."""
    code = ("import sys\nfrom circuits import cli\ntry:\n    cli.main(%r)\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\nprint(sorted(m for m in sys.modules if m == 'torch' or m.startswith('protocols.')))"
            % args)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_the_first_line_says_what_will_train_and_bounds_the_time(tmp_path, capsys, monkeypatch):
    """A run's first line names the protocol, preset, model, p, seeds and sizes, and (for protocols
    that state their budget) an upper bound on the time measured from real steps of the model."""
    from circuits import api, cache, estimate, registry
    cfg = api.resolve("ungrokking", None, arch="transformer", p=113)
    line = cli_module.plan(cfg)
    assert line.startswith("ungrokking (paper preset): 1-layer transformer d_model 128") and "p = 113" in line
    assert "sizes [390, 490, 616, 774, 973, 1222, 1494]" in line and "coarse_seeds 2" in line
    module = registry.get("ungrokking").module
    plan = module.budget(cfg)
    assert len(plan) == 1 + 7 * 5 and plan[0] == (3830, 40000, 1)             # grok (3,830 = int(0.3 p^2) pairs), then 7 x 5
    assert sorted({n for n, _, _ in plan[1:]}) == [390, 490, 616, 774, 973, 1222, 1494]
    assert all(steps == 30000 and w >= 1 for _, steps, w in plan[1:])
    monkeypatch.setattr(estimate, "step_seconds", lambda c, n, threads=None: 0.001 * n / 100)   # 1 ms per 100 examples
    runs = {w: [0.001 * n / 100 * steps for n, steps, w_ in plan if w_ == w] for _, _, w in plan}
    want = sum(sum(t) / w + (1 - 1 / w) * max(t) for w, t in runs.items())     # estimate.makespan
    assert estimate.upper_bound(cfg, module) == pytest.approx(want)
    assert estimate.makespan([60.0], 2) == 60.0                  # one run is not spread over two processes
    assert 20.0 <= estimate.makespan([10.0] * 4, 2) <= 25.0 and estimate.makespan([], 2) == 0.0
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    grok = cache.entry_path(cfg, 0, module.grokked_rule(0.99)[1])               # a grokked network in the cache
    grok.parent.mkdir(parents=True)
    grok.touch()
    assert module.budget(cfg) == plan[1:]                                       # is not trained again
    assert len(registry.get("dcrit").module.budget(api.resolve("dcrit", "quick"))) == 6 * 2 + 1 + 5 * 5 + 4 * 2
    # a resumed run is bounded by the work left: a finished subset run's record, a finished network
    from circuits.store import write_json
    job = module.jobs_for(cfg, 0, grok, 3831)[0]
    write_json(module.record_path(job), {"job": job.name, "status": "stopped", "history": [{"step": 500}]})
    assert len(module.budget(cfg)) == len(plan) - 2
    # once a group's coarse pass (subset seeds 0-1) has finished, only its second pass's sizes count
    acc = {390: 0.05, 490: 0.1, 616: 0.5, 774: 0.95, 973: 0.98, 1222: 0.99, 1494: 1.0}    # in transition: 490, 616
    for j in module.jobs_for(cfg, 0, grok, 3831):
        if j.subset_seed < 2:
            write_json(module.record_path(j), {"job": j.name, "status": "stopped",
                                               "history": [{"step": 500, "test_acc": acc[j.size], "train_acc": 1.0}]})
    left = module.budget(cfg)
    assert sorted(n for n, _, _ in left) == sorted([390, 490, 616, 774] * 3)           # seeds 2-4, one size either side
    for j in module.jobs_for(cfg, 0, grok, 3831):
        write_json(module.record_path(j), {"job": j.name, "status": "stopped",
                                           "history": [{"step": 500, "test_acc": acc[j.size], "train_acc": 1.0}]})
    assert module.budget(cfg) == [] and estimate.said(estimate.upper_bound(cfg, module)).startswith("; nothing left")
    from protocols import dcrit as dc, efficiency, semigrokking
    sweep = api.resolve("dcrit", "quick", overrides=["params.method=sweep"])
    n = len(dc.budget(sweep))
    sp = dc.protocol_fields(sweep.params, dc.DEFAULTS, "params")
    first = dc.sweep_jobs(sweep, sp, dc.weight_decays(sweep, sp)[0])[0]
    semigrokking.entry(first).parent.mkdir(parents=True)
    semigrokking.entry(first).touch()
    assert len(dc.budget(sweep)) == n - 1
    eff = api.resolve("efficiency", "quick")
    n, j = len(efficiency.budget(eff)), efficiency.jobs_for(eff)[0]
    cache.entry_path(j.cfg, j.seed, j.stop_name).parent.mkdir(parents=True)
    cache.entry_path(j.cfg, j.seed, j.stop_name).touch()
    assert len(efficiency.budget(eff)) == n - 1
    dcrit = api.resolve("dcrit", "quick")                                       # all three methods
    assert "ungrokking: grok_seeds [0], sizes [0.1, 0.15, 0.21, 0.28, 0.4]" in cli_module.plan(dcrit)
    sweep_only = cli_module.plan(api.resolve("dcrit", "quick", overrides=["params.method=sweep"]))
    assert "sweep: sizes" in sweep_only and "ungrokking:" not in sweep_only and "efficiency:" not in sweep_only
    assert "coarse_seeds" not in cli_module.plan(api.resolve("ungrokking", "quick"))   # off: not said
    assert estimate.upper_bound(api.resolve("mixture", "quick"), registry.get("mixture").module) is None
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        cli_module.main(["run", "grokking", "--arch", "mlp", "--p", "11", "--set", "train.steps=20", "--out", "r"])
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("grokking (quick preset): MLP") and "p = 11" in first and "at most ~" in first


def test_plan_prints_the_first_line_and_trains_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """`--plan` says what a run would train and its time bound, then stops: exit 0, no run directory,
    nothing in the cache; the same line a real run starts with."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    args = ["run", "grokking", "--arch", "mlp", "--p", "11", "--set", "train.steps=20"]
    with pytest.raises(SystemExit) as e:
        cli_module.main([*args, "--plan", "--out", "r"])
    assert e.value.code == 0
    planned = capsys.readouterr().out.splitlines()
    assert len(planned) == 1 and planned[0].startswith("grokking (quick preset): MLP") and "at most ~" in planned[0]
    assert not list(tmp_path.iterdir())                                     # no run directory, no cache
    with pytest.raises(SystemExit):
        cli_module.main([*args, "--out", "r"])
    ran = capsys.readouterr().out.splitlines()[0]
    assert ran.split("; at most")[0] == planned[0].split("; at most")[0]  # the bound is re-measured: same words
    with pytest.raises(SystemExit) as e:
        cli_module.main(["dcrit", "--preset", "quick", "--method", "ungrokking", "--plan", "--out", "d"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("dcrit (quick preset)")
    assert not (tmp_path / "d").exists()


def test_a_sweep_says_its_points_and_time_bound_first_and_plan_stops_there(tmp_path, capsys, monkeypatch):
    """`run --sweep` starts with one line: the axes, how many points, how many left and at most how
    long they take here; `--plan` prints only it (no run directory); a finished sweep has nothing left."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    args = ["run", "grokking", "--arch", "mlp", "--p", "11", "--set", "train.steps=20", "--set", "seeds=[0]",
            "--sweep", "task.frac=0.3,0.5", "--workers", "1", "--out", "s"]
    with pytest.raises(SystemExit) as e:
        cli_module.main([*args, "--plan"])
    planned = capsys.readouterr().out.splitlines()
    assert e.value.code == 0 and len(planned) == 1 and not list(tmp_path.iterdir())
    assert planned[0].startswith("sweep of grokking (quick preset): MLP") and "over task.frac [0.3, 0.5]: 2 points, " \
        "2 to run on 1 worker; at most ~" in planned[0]
    with pytest.raises(SystemExit):
        cli_module.main(args)
    assert capsys.readouterr().out.splitlines()[0].split("; at most")[0] == planned[0].split("; at most")[0]
    with pytest.raises(SystemExit) as e:
        cli_module.main([*args, "--plan"])
    assert e.value.code == 0 and "2 points, 0 to run on 1 worker; nothing left to train" in capsys.readouterr().out
