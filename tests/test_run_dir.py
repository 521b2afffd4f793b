"""Run directories: a changed config is refused, not paired with the old verdict; --out and --fresh
never touch what is not a circuits run directory; one protocol run at a time per directory;
verdicts read the same fresh and read back; torch's thread count survives a run."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from circuits import api, experiment
from circuits.config import Config, ModelConfig, OptimConfig, TaskConfig, TrainConfig
from circuits.errors import CircuitsError


def _cfg(**optim) -> Config:
    return Config(protocol="grokking", task=TaskConfig(p=11, frac=0.5),
                  model=ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32),
                  optim=OptimConfig(lr=3e-3, **optim), train=TrainConfig(steps=20, eval_every=10, checkpoint_every=10),
                  seeds=[0])


def _files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))


def test_a_changed_config_is_refused_before_anything_is_written(tmp_path):
    run_dir = tmp_path / "r"
    first = api.run_config(_cfg(), run_dir)
    before = _files(run_dir)
    with pytest.raises(CircuitsError) as e:
        api.run_config(_cfg(weight_decay=0.0), run_dir)
    assert str(e.value) == (f"{run_dir} holds a run of another config (optim.weight_decay: 1.0 -> 0.0); "
                            f"use --fresh to replace it or --out for a new directory")
    assert _files(run_dir) == before                              # nothing rewritten, the old verdict kept
    with pytest.raises(CircuitsError, match="optim.weight_decay: 1.0 -> 0.0"):
        experiment.begin(_cfg(weight_decay=0.0), run_dir)          # a protocol called directly is refused too
    assert api.run_config(_cfg(), run_dir)["measured"] == first["measured"]


def test_speed_only_fields_keep_the_run(tmp_path):
    run_dir = tmp_path / "r"
    api.run_config(_cfg(), run_dir)
    cfg = _cfg()
    cfg.train.threads, cfg.train.checkpoint_every, cfg.train.device = 1, 5, "cpu"
    assert experiment.run_fingerprint(cfg) == experiment.run_fingerprint(_cfg())
    assert api.is_done(cfg, run_dir)
    assert not api.is_done(_cfg(weight_decay=0.5), run_dir)


def test_a_run_recorded_before_a_field_was_added_is_the_same_run(tmp_path):
    run_dir = tmp_path / "r"
    api.run_config(_cfg(), run_dir)
    rec = json.loads((run_dir / "run.json").read_text())            # as an older version wrote it
    del rec["config"]["optim"]["weight_noise"]
    (run_dir / "run.json").write_text(json.dumps(rec))
    assert api.is_done(_cfg(), run_dir) and not api.is_done(_cfg(weight_noise=0.1), run_dir)
    (run_dir / "run.json").unlink()                                 # older still: config.yaml only
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(text.replace("  weight_noise: 0.0\n", ""))
    assert "weight_noise" not in (run_dir / "config.yaml").read_text()
    assert api.is_done(_cfg(), run_dir) and not api.is_done(_cfg(weight_noise=0.1), run_dir)


def test_differences_name_the_first_keys():
    old = {"optim": {"lr": 1.0, "wd": 1.0}, "train": {"steps": 3}, "seeds": [0]}
    new = {"optim": {"lr": 2.0, "wd": 0.0}, "train": {"steps": 4}, "seeds": [0, 1], "x": 1}
    assert experiment.differences(old, new) == ("optim.lr: 1.0 -> 2.0, optim.wd: 1.0 -> 0.0, train.steps: 3 -> 4, "
                                                "and 2 more")


@pytest.fixture
def no_deleting(tmp_path, monkeypatch):
    """HOME inside tmp_path, and every way of deleting a file or folder raises."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))

    def refuse(*a, **k):
        raise AssertionError(f"tried to delete {a[:1]}")

    for obj, name in ((shutil, "rmtree"), (os, "unlink"), (os, "remove"), (os, "rmdir"), (Path, "unlink"),
                      (Path, "rmdir")):
        monkeypatch.setattr(obj, name, refuse)
    return home


def test_out_refuses_cwd_home_and_root(tmp_path, monkeypatch, no_deleting):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in ("", ".", "./", str(work), str(no_deleting), "~", "/", str(tmp_path)):   # never with fresh=True
        with pytest.raises(CircuitsError, match="name a run directory"):
            api.run_dir_for(_cfg(), out)
    assert api.run_dir_for(_cfg(), "runs/a") == Path("runs/a")


def test_out_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    with pytest.raises(CircuitsError, match="is an existing file"):
        api.run_dir_for(_cfg(), f, fresh=True)
    assert f.read_text() == "mine"


def test_fresh_deletes_only_a_circuits_run_directory(tmp_path):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "config.yaml").write_text("data: 1\n")            # a config.yaml, but not a run directory of ours
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(CircuitsError) as e:
        api.run_dir_for(_cfg(), mine, fresh=True)
    assert str(e.value).startswith(f"--fresh: {mine} is not a circuits run directory")
    assert str(e.value).endswith("; not deleting it")
    assert (mine / "thesis.tex").read_text() == "years of work"

    run_dir = tmp_path / "r"
    api.run_config(_cfg(), run_dir)
    assert experiment.is_run_dir(run_dir)
    assert api.run_dir_for(_cfg(weight_decay=0.0), run_dir, fresh=True) == run_dir and not run_dir.exists()
    v = api.run_config(_cfg(weight_decay=0.0), run_dir)              # replaced: runs the new config
    assert v["measured"]["per_seed"]["0"]["steps"] == 20


def test_unreadable_verdict_is_not_done_and_unreadable_config_is_rewritten(tmp_path, capsys):
    run_dir = tmp_path / "r"
    api.run_config(_cfg(), run_dir)
    (run_dir / "verdict.json").write_text('{"status": "hol')       # truncated
    assert not api.is_done(_cfg(), run_dir)
    (run_dir / "config.yaml").write_text("protocol: [unclosed\n")  # unreadable
    capsys.readouterr()
    v = api.run_config(_cfg(), run_dir)
    err = capsys.readouterr().err
    assert f"circuits: {run_dir / 'config.yaml'} is unreadable; writing it again" in err
    assert v["status"] in ("holds", "fails", "inconclusive") and api.is_done(_cfg(), run_dir)
    assert "protocol: grokking" in (run_dir / "config.yaml").read_text()


HOLD = """
import sys, time
from pathlib import Path
from circuits.experiment import run_lock
with run_lock(sys.argv[1]):
    Path(sys.argv[2]).write_text("held")
    for _ in range(600):
        if Path(sys.argv[3]).exists():
            break
        time.sleep(0.05)
"""


def test_a_second_process_is_refused_while_a_run_holds_the_directory(tmp_path):
    run_dir, ready, done = tmp_path / "r", tmp_path / "ready", tmp_path / "done"
    api.run_config(_cfg(), run_dir)
    before = _files(run_dir)
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), str(ready), str(done)])
    try:
        for _ in range(600):
            if ready.exists() or child.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists()
        with pytest.raises(CircuitsError) as e:
            api.run_config(_cfg(), run_dir)
        holder = f"pid {child.pid} on {os.uname().nodename}"
        assert str(e.value) == (f"{run_dir} is in use by another circuits run ({holder}); "
                                f"wait for it to finish or use --out for another directory")
        with pytest.raises(CircuitsError, match="in use by another circuits run"):
            api.run_dir_for(_cfg(), run_dir, fresh=True)               # --fresh does not delete it under the run
        assert {k: v for k, v in _files(run_dir).items() if k != ".circuits.lock"} == \
               {k: v for k, v in before.items() if k != ".circuits.lock"}
    finally:
        done.write_text("")
        child.wait(timeout=30)
    assert api.run_config(_cfg(), run_dir)["status"]             # free again


def test_thread_count_is_restored_and_per_seed_keys_are_strings(tmp_path):
    torch.set_num_threads(2)
    cfg = _cfg()
    cfg.train.threads = 1
    fresh = api.run_config(cfg, tmp_path / "r")
    assert torch.get_num_threads() == 2
    again = api.run_config(cfg, tmp_path / "r")
    assert list(fresh["measured"]["per_seed"]) == ["0"] == list(again["measured"]["per_seed"])
    assert json.dumps(fresh) == json.dumps(again)


def test_json_is_written_without_nan_and_with_string_keys(tmp_path):
    from circuits.store import read_json, write_json

    write_json(tmp_path / "v.json", {"per_seed": {0: {"x": float("nan"), "y": float("inf")}},
                                     "z": [float("-inf"), 1.5]})
    text = (tmp_path / "v.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert read_json(tmp_path / "v.json") == {"per_seed": {"0": {"x": None, "y": None}}, "z": [None, 1.5]}
