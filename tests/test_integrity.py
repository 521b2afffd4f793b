"""What circuits reads back is what it wrote for this very run: fingerprinted checkpoints, a cache
keyed by format and code, locks for two writers, truncated files retrained, no pickle code run."""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from circuits import cache, store
from circuits.config import Config, ModelConfig, OptimConfig, TaskConfig, TrainConfig
from circuits.errors import CircuitsError
from circuits.experiment import build
from circuits.train import train


def _cfg(steps: int = 20, **optim) -> Config:
    return Config(protocol="grokking", task=TaskConfig(p=11, frac=0.5),
                  model=ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32),
                  optim=OptimConfig(lr=3e-3, **optim),
                  train=TrainConfig(steps=steps, eval_every=10, checkpoint_every=10), seeds=[0])


def _run(cfg, **kw):
    model, data = build(cfg, 0, "cpu")
    return train(model, data, cfg.optim, cfg.train, seed=0, **kw), model


def _strip(history):
    return [{k: v for k, v in r.items() if k != "time"} for r in history]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------- checkpoints


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path, capsys):
    ck = tmp_path / "checkpoint.pt"
    _run(_cfg(), checkpoint=ck)                                          # finished, wd 1
    ref, _ = _run(_cfg(weight_decay=0.0))
    capsys.readouterr()
    got, _ = _run(_cfg(weight_decay=0.0), checkpoint=ck)                 # same path, another config
    assert capsys.readouterr().err == f"circuits: {ck} is a checkpoint of another run; starting from step 0\n"
    assert _strip(got.history) == _strip(ref.history)
    other, _ = _run(_cfg(weight_decay=0.0), checkpoint=ck, fingerprint_extra={"run": "another"})
    assert other.step == 20 and "another run" in capsys.readouterr().err


def test_a_truncated_checkpoint_restarts_from_step_zero(tmp_path, capsys):
    ck = tmp_path / "checkpoint.pt"
    full, _ = _run(_cfg())
    _run(_cfg(), checkpoint=ck, stop=lambda row: row["step"] == 10)
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    got, _ = _run(_cfg(), checkpoint=ck)
    err = capsys.readouterr().err
    assert err.startswith(f"circuits: {ck} is truncated or corrupt (") and err.endswith("; starting from step 0\n")
    assert err.count("\n") == 1
    assert _strip(got.history) == _strip(full.history)


def test_checkpoints_load_without_pickle_and_keep_cuda_rng(tmp_path, monkeypatch):
    cuda = [torch.arange(4, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    cfg = _cfg(decay_to_init=True, grad_noise=1e-3, batch_size=8)
    ck = tmp_path / "checkpoint.pt"
    from circuits.fourier import strength_metrics

    _run(cfg, checkpoint=ck, stop=lambda row: row["step"] == 10, extra_metrics=(strength_metrics,))
    state = torch.load(ck, weights_only=True)                            # no pickle code needed
    assert torch.equal(state["cuda_rng"][0], cuda[0])
    state["result"]["status"] = "done"                                  # as if killed at step 10
    store.save_torch(ck, state)
    _run(cfg, checkpoint=ck, extra_metrics=(strength_metrics,))
    assert len(restored) == 1 and torch.equal(restored[0][0], cuda[0])


class _Evil:
    """Unpickling this creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


def test_a_file_that_needs_pickle_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Evil(marker), "result": {}}, evil)
    with pytest.raises(CircuitsError) as e:
        store.load_torch(evil)
    assert str(e.value).startswith(f"{evil} is not a safe circuits file")
    with pytest.raises(CircuitsError, match="is not a safe circuits file"):
        _run(_cfg(), checkpoint=evil)
    folder = cache.cache_dir() / cache.cache_key(_cfg(), 0, "budget")
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(evil.read_bytes())
    with pytest.raises(CircuitsError, match="is not a safe circuits file"):
        cache.trained(_cfg(), 0, quiet=True)
    assert not marker.exists()
    torch.load(evil, weights_only=False)                                  # what a plain load would have done
    assert marker.exists()


# ---------------------------------------------------------------- the cache


def test_cache_key_has_format_and_code(monkeypatch):
    key = cache.cache_key(_cfg(), 0, "budget")
    monkeypatch.setattr(cache, "CACHE_FORMAT", 3)
    assert cache.cache_key(_cfg(), 0, "budget") != key
    monkeypatch.setattr(cache, "CACHE_FORMAT", 2)
    monkeypatch.setattr(cache, "code_fingerprint", lambda: "edited")
    assert cache.cache_key(_cfg(), 0, "budget") != key


def test_code_fingerprint_ignores_comments_and_docstrings():
    src = textwrap.dedent('''
        """Module doc."""
        def f(x):
            """Doc."""
            return x + 1  # a comment
    ''')
    edited = src.replace("Doc.", "Another doc.").replace("# a comment", "# another").replace('"""Module doc."""', "")
    changed = src.replace("x + 1", "x + 2")
    assert cache.source_digest(src) == cache.source_digest(edited) != cache.source_digest(changed)
    assert len(cache.code_fingerprint()) == 16


def test_cache_entries_of_another_format_or_code_are_misses(tmp_path):
    t, path = cache.trained(_cfg(), 0, quiet=True)
    entry = torch.load(path, weights_only=True)
    assert entry["format"] == cache.CACHE_FORMAT == 2 and entry["code"] == cache.code_fingerprint()
    for field, value in (("format", 1), ("code", "old")):
        store.save_torch(path, {**entry, field: value})
        model, _ = build(_cfg(), 0, "cpu")
        assert cache.read_entry(path, model) is None
    store.save_torch(path, entry)
    model, _ = build(_cfg(), 0, "cpu")
    assert cache.read_entry(path, model).step == 20


def test_a_truncated_cache_entry_is_trained_again(tmp_path, capsys):
    t, path = cache.trained(_cfg(), 0, quiet=True)
    path.write_bytes(path.read_bytes()[:100])
    capsys.readouterr()
    again, path2 = cache.trained(_cfg(), 0, quiet=True)
    err = capsys.readouterr().err
    assert err.startswith(f"circuits: {path} is truncated or corrupt (") and err.endswith("; training it again\n")
    assert path2 == path and _strip(again.result.history) == _strip(t.result.history)
    assert torch.load(path, weights_only=True)["result"]["step"] == 20


TWO_WRITERS = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from circuits import cache
from circuits.config import Config, ModelConfig, OptimConfig, TaskConfig, TrainConfig

cfg = Config(protocol="grokking", task=TaskConfig(p=11, frac=0.5),
             model=ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32), optim=OptimConfig(lr=3e-3),
             train=TrainConfig(steps=20, eval_every=10, checkpoint_every=10), seeds=[0])
real, steps = cache.train, []

def slow_train(*a, **k):
    time.sleep(1.5)                      # long enough for the other process to ask for the same entry
    r = real(*a, **k)
    steps.append(r.step)
    return r

cache.train = slow_train
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.01)
t, _ = cache.trained(cfg, 0, quiet=True)
Path(sys.argv[2]).write_text(json.dumps({"trained": steps, "step": t.result.step,
                                         "norm": t.result.history[-1]["param_norm"]}))
"""


def test_two_processes_train_a_cache_entry_once(tmp_path):
    go = tmp_path / "go"
    env = {**os.environ, "CIRCUITS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "CIRCUITS_QUIET": "1"}
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", TWO_WRITERS, str(go), str(o)], env=env,
                              stderr=subprocess.PIPE, text=True) for o in outs]
    time.sleep(0.5)
    go.write_text("")
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    got = [json.loads(o.read_text()) for o in outs]
    assert sorted(sum(g["trained"], 0) for g in got) == [0, 20]          # one trained, the other read its result
    assert got[0]["step"] == got[1]["step"] == 20 and got[0]["norm"] == got[1]["norm"]
    assert sum("is being trained by pid" in e for e in errs) == 1


# ---------------------------------------------------------------- temp files of dead writers


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_only_a_dead_writers_temps_are_removed(tmp_path):
    host = os.uname().nodename
    dead = tmp_path / f".verdict.json.{_dead_pid()}@{host}.ab12cd.tmp"
    alive = tmp_path / "sub" / f".metrics.csv.{os.getpid()}@{host}.x_9y.tmp"
    elsewhere = tmp_path / ".meta.json.1@other.host.example.zz.tmp"
    old = tmp_path / f".model.pt.{os.getpid()}@{host}.old.tmp"
    for f in (dead, alive, elsewhere, old):
        f.parent.mkdir(exist_ok=True)
        f.write_text("partial")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert store.remove_stale_temps(tmp_path) == 2
    assert not dead.exists() and not old.exists() and alive.exists() and elsewhere.exists()
