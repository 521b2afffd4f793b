"""figures/keep_runs.py keeps a long run's finished work (networks and subset-run records), and with
--unfinished the checkpoints of runs still training, which a restored cache resumes exactly."""
import importlib.util
import os
from pathlib import Path

import pytest

from circuits.config import Config, ModelConfig, OptimConfig, TaskConfig, TrainConfig
from circuits.experiment import build
from circuits.store import load_torch
from circuits.train import train

ROOT = Path(__file__).resolve().parents[1]


def _keep_runs():
    spec = importlib.util.spec_from_file_location("keep_runs", ROOT / "figures" / "keep_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_keep_copies_finished_work_only(tmp_path):
    src, dst = tmp_path / "cache", tmp_path / "kept"
    files = {"abc/model.pt": b"net", "abc/config.json": b"{}", "abc/checkpoint.pt": b"unfinished",
             "ungrok/k1/history.json": b"[1]", "ungrok/k1/checkpoint.pt": b"weights",
             "ungrok/k2/checkpoint.pt": b"still training"}
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    kr = _keep_runs()
    copied = kr.keep(src, dst)
    kept = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert kept == ["abc/config.json", "abc/model.pt", "ungrok/k1/history.json"]
    assert len(copied) == 3 and kr.keep(src, dst) == []          # a second keep copies nothing new
    (src / "ungrok/k1/history.json").write_bytes(b"[1, 2]")
    assert kr.keep(src, dst) == [dst / "ungrok/k1/history.json"]
    assert (dst / "ungrok/k1/history.json").read_bytes() == b"[1, 2]"


def _write(root, files):
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def test_unfinished_checkpoints_are_kept_only_while_their_run_is_unfinished(tmp_path):
    src, dst = tmp_path / "cache", tmp_path / "kept"
    _write(src, {"net/checkpoint.pt": b"training", "done/model.pt": b"net", "done/checkpoint.pt": b"old",
                 "capped/model.pt": b"net", "capped/final.pt": b"state at its cap",
                 "ungrok/k1/checkpoint.pt": b"at 500", "ungrok/k2/history.json": b"[1]",
                 "ungrok/k2/checkpoint.pt": b"final weights"})
    kr = _keep_runs()
    kr.keep(src, dst, unfinished=True)
    kept = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert kept == ["capped/final.pt", "capped/model.pt", "done/model.pt", "net/checkpoint.pt",
                    "ungrok/k1/checkpoint.pt", "ungrok/k2/history.json"]
    assert kr.keep(src, dst, unfinished=True) == []                        # nothing new
    (src / "ungrok/k1/checkpoint.pt").write_bytes(b"at 1000")             # the run went on
    os.utime(src / "ungrok/k1/checkpoint.pt", (2e9, 2e9))
    assert kr.keep(src, dst, unfinished=True) == [dst / "ungrok/k1/checkpoint.pt"]
    (src / "ungrok/k1/history.json").write_bytes(b"[2]")                  # then finished
    kr.keep(src, dst, unfinished=True)
    assert (dst / "ungrok/k1/checkpoint.pt").exists()                     # kept until pruned
    cache = tmp_path / "restored"
    kr.keep(dst, cache, unfinished=True)                                  # a finished run's stale checkpoint
    assert not (cache / "ungrok/k1/checkpoint.pt").exists()               # is never restored
    assert (cache / "ungrok/k1/history.json").read_bytes() == b"[2]"
    assert (cache / "net/checkpoint.pt").read_bytes() == b"training"
    kr.keep(src, dst, unfinished=True, prune=True)
    assert not (dst / "ungrok/k1/checkpoint.pt").exists() and (dst / "net/checkpoint.pt").exists()
    assert (dst / "capped/final.pt").exists() and (cache / "capped/final.pt").exists()   # kept and restored
    (cache / "net/checkpoint.pt").write_bytes(b"further on")             # a live cache's newer checkpoint
    kr.keep(dst, cache, unfinished=True)                                  # is not rolled back
    assert (cache / "net/checkpoint.pt").read_bytes() == b"further on"


def test_a_kept_unfinished_checkpoint_resumes_to_the_same_run(tmp_path):
    """A run cut off after step 20 (its checkpoint kept, restored into a fresh cache) and continued to
    40 gives the history and weights of the run trained to 40 in one go."""
    cfg = Config(protocol="grokking", task=TaskConfig(p=11, frac=0.5),
                 model=ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32), optim=OptimConfig(lr=3e-3),
                 train=TrainConfig(steps=40, eval_every=10, checkpoint_every=10), seeds=[0])

    def run(checkpoint=None, stop=None):
        model, data = build(cfg, 0, "cpu")
        res = train(model, data, cfg.optim, cfg.train, seed=0, checkpoint=checkpoint, stop=stop)
        return [{k: v for k, v in r.items() if k != "time"} for r in res.history], model

    class SessionEnds(Exception):
        pass

    def cut_off(row):
        if row["step"] == 30:              # killed after the step-20 checkpoint, before the next
            raise SessionEnds

    with pytest.raises(SessionEnds):
        run(tmp_path / "cache" / "abc" / "checkpoint.pt", stop=cut_off)
    kr = _keep_runs()
    kr.keep(tmp_path / "cache", tmp_path / "kept", unfinished=True)
    kr.keep(tmp_path / "kept", tmp_path / "next", unfinished=True)        # the next session's fresh cache
    restored = tmp_path / "next" / "abc" / "checkpoint.pt"
    assert load_torch(restored)["result"]["step"] == 20                   # it resumes from there
    resumed, m1 = run(restored)
    straight, m2 = run()
    assert resumed == straight and resumed[-1]["step"] == 40
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert (a == b).all()


def test_keep_runs_merges_the_caps_index(tmp_path):
    import json
    keep_runs = _keep_runs()
    src, dst = tmp_path / "src" / "ungrok" / "caps", tmp_path / "dst" / "ungrok" / "caps"
    src.mkdir(parents=True)
    dst.mkdir(parents=True)
    (tmp_path / "src" / "caps").mkdir()
    (tmp_path / "src" / "caps" / "c.json").write_text("[40000]")          # the trained-circuit cache's index
    (src / "a.json").write_text("[30000]")
    (dst / "a.json").write_text("[10000, 100000]")
    (src / "b.json").write_text("[30000]")
    copied = keep_runs.keep(tmp_path / "src", tmp_path / "dst")
    assert json.loads((dst / "a.json").read_text()) == [10000, 30000, 100000]   # union, not overwritten
    assert json.loads((dst / "b.json").read_text()) == [30000] and len(copied) == 3
    assert json.loads((tmp_path / "dst" / "caps" / "c.json").read_text()) == [40000]
    assert keep_runs.keep(tmp_path / "src", tmp_path / "dst") == []             # nothing new
