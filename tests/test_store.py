import csv
import os

import pytest

from circuits import store


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "verdict.json"
    store.write_json(path, {"status": "holds"})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.write_json(path, {"status": "fails"})
    assert store.read_json(path) == {"status": "holds"}
    assert [p.name for p in tmp_path.iterdir()] == ["verdict.json"]    # no temp file left behind


def test_metrics_csv_long_format(tmp_path):
    rows = store.metric_rows("seed0", [{"step": 0, "phase": 0, "time": 0.1, "train_acc": 0.5, "test_loss": 2.0,
                                        "param_norm": 3.0}])
    store.write_metrics(tmp_path, rows)
    with open(tmp_path / "metrics.csv") as f:
        got = list(csv.DictReader(f))
    assert [(r["run"], r["step"], r["split"], r["metric"], float(r["value"])) for r in got] == [
        ("seed0", "0", "train", "acc", 0.5), ("seed0", "0", "test", "loss", 2.0), ("seed0", "0", "all", "param_norm", 3.0)]
