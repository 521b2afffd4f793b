"""Run directories: atomic writes (temp file + rename), metrics.csv, meta.json, checkpoints, cache.

A run directory holds config.yaml, run.json, meta.json, metrics.csv, figure.png/.pdf and
verdict.json (DESIGN.md). A file is only ever seen whole: each write goes to a temp file in the
same folder, named after its writer (`.NAME.PID@HOST.XXXX.tmp`), is flushed to disk and renamed
over the target. Torch files are read with `weights_only` (no pickle code runs), JSON is written
without NaN/inf (null instead) and with string keys, so what is written reads back equal.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import pickle
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from filelock import FileLock, Timeout

from circuits.config import to_dict
from circuits.errors import CircuitsError

METRIC_FIELDS = ("run", "step", "split", "metric", "value")
STALE_TEMP_SECONDS = 3600          # a temp file older than this is stale whoever wrote it


class UnsafeFile(CircuitsError):
    """A torch file that needs pickle code to load: never loaded."""


class CorruptFile(CircuitsError):
    """A torch file that is truncated or not a torch file at all."""


def writer_tag() -> str:
    """PID@HOST of this process: names its temp files so that only a dead writer's are removed."""
    return f"{os.getpid()}@{socket.gethostname()}"


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write data to path through a temp file in the same folder: path is old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{writer_tag()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:                     # a full disk names the file it could not write
        if os.path.exists(tmp):
            os.unlink(tmp)
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


_TEMP_WRITER = re.compile(r"\.(\d+)@(.+)\.[^.]+\.tmp$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale_temp(path: Path, now: float | None = None) -> bool:
    """A temp file whose writer is dead on this host, or that is older than STALE_TEMP_SECONDS."""
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if age > STALE_TEMP_SECONDS:
        return True
    m = _TEMP_WRITER.search(path.name)
    return bool(m) and m.group(2) == socket.gethostname() and not pid_alive(int(m.group(1)))


def remove_stale_temps(folder) -> int:
    """Delete the temp files a killed writer left in folder (and below); they were never results.
    Temps of a live writer (another process writing into the same folder) are left alone."""
    n = 0
    for tmp in Path(folder).rglob(".*.tmp"):
        if tmp.is_file() and is_stale_temp(tmp):
            tmp.unlink(missing_ok=True)
            n += 1
    return n


@contextmanager
def locked(path, *, wait: bool = True, busy: Callable[[str], str] | None = None, waiting: str | None = None):
    """Hold the lock file at path while the block runs (other processes are kept out, the file stays).
    When another process holds it: with wait, say `waiting` (formatted with holder=PID@HOST) on
    stderr once and wait; without, raise CircuitsError(busy(holder))."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = lock_holder(path)
        if not wait:
            raise CircuitsError(busy(holder) if busy else f"{path} is locked by {holder}") from None
        if waiting:
            print(f"circuits: {waiting.format(holder=holder)}", file=sys.stderr, flush=True)
        lock.acquire(timeout=-1)
    try:
        with open(path, "w") as f:                     # the holder, for whoever finds it locked
            f.write(f"pid {writer_tag().replace('@', ' on ', 1)}\n")
        yield
    finally:
        lock.release()


def is_locked(path) -> bool:
    """Whether another process holds the lock file at path now (a probe: taken and released at once)."""
    if not Path(path).exists():
        return False
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


def lock_holder(path) -> str:
    """'pid N on HOST' as the holder of the lock file wrote it, or 'another process'."""
    try:
        return Path(path).read_text().strip() or "another process"
    except OSError:
        return "another process"


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def write_json(path, obj) -> Path:
    """JSON with string keys and null for NaN/inf (`plain`): it reads back equal to what was written."""
    return atomic_write_text(path, json.dumps(plain(obj), indent=2, allow_nan=False) + "\n")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def plain(x):
    """x as JSON reads it back: dict keys as strings, tuples as lists, numpy/torch scalars and arrays
    as numbers and lists, NaN and inf as None."""
    if isinstance(x, dict):
        return {_key(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return plain(x.tolist())
    if isinstance(x, (np.generic,)):
        return plain(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    raise TypeError(f"not JSON serialisable: {type(x)}")


def _key(k) -> str:
    """A dict key as json.dumps writes it."""
    if isinstance(k, np.generic):
        k = k.item()
    if isinstance(k, str):
        return k
    if k is None or isinstance(k, (bool, float)):
        return json.dumps(k)
    return str(k)


def save_torch(path, obj) -> Path:
    """torch.save to path atomically, numpy numbers turned into Python's (so weights_only loads it)."""
    buf = io.BytesIO()
    torch.save(_torch_plain(obj), buf)
    return atomic_write_bytes(path, buf.getvalue())


def _torch_plain(x):
    """x with numpy scalars and arrays as Python numbers and tensors; a container is rebuilt only
    when something in it changed (a state_dict keeps its type and metadata)."""
    if isinstance(x, dict):
        new = {k: _torch_plain(v) for k, v in x.items()}
        return x if all(new[k] is v for k, v in x.items()) else new
    if isinstance(x, (list, tuple)):
        new = [_torch_plain(v) for v in x]
        return x if all(a is b for a, b in zip(new, x)) else (tuple(new) if isinstance(x, tuple) else new)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    return x


def load_torch(path):
    """A torch file written by circuits, loaded with weights_only (tensors, plain containers and
    numbers; no pickle code runs). UnsafeFile if it needs more, CorruptFile if it is truncated or
    not a torch file (both CircuitsErrors naming the file)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            raise UnsafeFile(f"{path} is not a safe circuits file (it needs pickle code to load); "
                             f"not loading it") from None
        raise CorruptFile(f"{path} is truncated or corrupt ({_first_line(e)})") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, IndexError, UnicodeDecodeError) as e:
        raise CorruptFile(f"{path} is truncated or corrupt ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    """'Type: the first sentence of the message' (at most 100 characters of it)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0].split('. ')[0][:100]}" if text else type(e).__name__


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
