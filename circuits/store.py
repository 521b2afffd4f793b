"""Run directories: atomic writes (temp file + rename), metrics.csv, meta.json, checkpoints, cache.

A run directory holds config.yaml, meta.json, metrics.csv, figure.png/.pdf and verdict.json
(DESIGN.md). A file is only ever seen whole: each write goes to a temp file in the same folder,
is flushed to disk and renamed over the target.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from circuits.config import to_dict

METRIC_FIELDS = ("run", "step", "split", "metric", "value")


def atomic_write_bytes(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_stale_temps(folder) -> int:
    """Delete the temp files a killed writer left in folder (and below); they were never results."""
    n = 0
    for tmp in Path(folder).rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def save_torch(path, obj) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_torch(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def write_config(run_dir, cfg) -> Path:
    return atomic_write_text(Path(run_dir) / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))


def metric_rows(run: str, history: list[dict]) -> list[tuple]:
    """History rows {step, train_acc, ...} -> long rows (run, step, split, metric, value)."""
    out = []
    for row in history:
        for key, value in row.items():
            if key in ("step", "phase", "time"):
                continue
            split, _, metric = key.partition("_") if key.split("_")[0] in ("train", "test") else ("all", "", key)
            out.append((run, row["step"], split, metric, value))
    return out


def write_metrics(run_dir, rows: list[tuple]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(METRIC_FIELDS)
    w.writerows(rows)
    return atomic_write_text(Path(run_dir) / "metrics.csv", buf.getvalue())


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def meta(device: str, started: float, ended: float | None = None) -> dict:
    from circuits import __version__

    return {
        "circuits": __version__, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "platform": platform.platform(), "device": device,
        "threads": torch.get_num_threads(), "git_commit": git_commit(), "argv": sys.argv,
        "start": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "end": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ended)) if ended else None,
        "seconds": round(ended - started, 2) if ended else None,
    }


def config_hash(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """Where trained circuits are kept for reuse by later protocols ($CIRCUITS_CACHE or ~/.cache/circuits)."""
    return Path(os.environ.get("CIRCUITS_CACHE", Path.home() / ".cache" / "circuits"))
