import csv
import os
import subprocess
import sys
import time

import pytest
import torch

from circuits import store


KILLED_WRITER = """
import os, sys, time
from pathlib import Path
from circuits import store

def stuck(fd):                       # the new data is in the temp file; never let it be renamed
    Path(sys.argv[2]).write_text("writing")
    time.sleep(120)

os.fsync = stuck
store.write_json(sys.argv[1], {"status": "fails"})
"""


def test_a_writer_killed_mid_write_leaves_the_old_file_and_a_temp_only_its_death_removes(tmp_path):
    path, writing = tmp_path / "verdict.json", tmp_path / "writing"
    store.write_json(path, {"status": "holds"})
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path), str(writing)])
    try:
        for _ in range(600):
            if writing.exists() or child.poll() is not None:
                break
            time.sleep(0.05)
        assert writing.exists()
        temps = list(tmp_path.glob(".verdict.json.*.tmp"))
        assert len(temps) == 1 and f".{child.pid}@" in temps[0].name
        assert store.remove_stale_temps(tmp_path) == 0 and temps[0].exists()   # its writer is alive: kept
    finally:
        child.kill()
        child.wait()
    assert store.read_json(path) == {"status": "holds"}                          # the old file, whole
    assert store.remove_stale_temps(tmp_path) == 1                               # its writer is dead: removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verdict.json", "writing"]


def test_a_write_failing_midway_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    store.save_torch(path, {"w": torch.ones(3)})
    seen = []

    def failing_fsync(fd):                 # the temp file holds the new bytes; the disk then fails
        seen.extend(p.name for p in tmp_path.glob(".model.pt.*.tmp"))
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        store.save_torch(path, {"w": torch.zeros(3)})
    assert len(seen) == 1                                                  # it did fail midway
    assert torch.equal(store.load_torch(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_metrics_csv_long_format(tmp_path):
    rows = store.metric_rows("seed0", [{"step": 0, "phase": 0, "time": 0.1, "train_acc": 0.5, "test_loss": 2.0,
                                        "param_norm": 3.0}])
    store.write_metrics(tmp_path, rows)
    with open(tmp_path / "metrics.csv") as f:
        got = list(csv.DictReader(f))
    assert [(r["run"], r["step"], r["split"], r["metric"], float(r["value"])) for r in got] == [
        ("seed0", "0", "train", "acc", 0.5), ("seed0", "0", "test", "loss", 2.0), ("seed0", "0", "all", "param_norm", 3.0)]
