"""figures/keep_runs.py keeps a long run's finished work (networks and subset-run records), never
unfinished checkpoints, and a restored cache reads the finished runs back without training."""
import importlib.util
from pathlib import Path

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
