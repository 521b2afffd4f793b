import json
import subprocess
import sys

import pytest

import circuits


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
])
def test_user_errors_are_one_line_exit_2(args, msg):
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and msg in r.stderr


def test_list_names_protocols_and_presets():
    r = cli("list")
    assert r.returncode == 0 and "grokking" in r.stdout and "quick" in r.stdout and "paper" in r.stdout


def test_run_writes_the_run_directory_and_resumes(tmp_path):
    args = ["run", "grokking", "--p", "11", "--set", "train.steps=30", "--set", "train.eval_every=10",
            "--set", "model.d_model=16", "--set", "model.d_mlp=32", "--out", str(tmp_path / "r")]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"config.yaml", "meta.json", "metrics.csv", "figure.png", "figure.pdf", "verdict.json"} <= files
    v = json.loads((tmp_path / "r" / "verdict.json").read_text())
    assert v["status"] == "inconclusive"            # 30 steps: no time to grok, judged as such
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["torch"] and meta["end"] and meta["device"] == "cpu"
    before = (tmp_path / "r" / "verdict.json").stat().st_mtime_ns
    assert cli(*args).returncode == 0                # finished: the verdict is read back, not recomputed
    assert (tmp_path / "r" / "verdict.json").stat().st_mtime_ns == before


def test_python_api(tmp_path):
    v = circuits.run("grokking", p=11, out=tmp_path / "api", overrides=["train.steps=20", "model.d_model=16"])
    assert v["protocol"] == "grokking" and v["status"] in ("holds", "fails", "inconclusive")
    assert (tmp_path / "api" / "verdict.json").exists()
