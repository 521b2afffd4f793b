"""Phenomenon detectors over a run's history (a list of eval rows {step, train_acc, test_acc, ...}),
the verdict, and how statuses combine.

Status: `holds` (the written criteria are met), `fails` (judged and not met), `inconclusive` (the
budget ran out before the criterion could be judged), `diverged` (NaN/inf loss).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("holds", "fails", "inconclusive", "diverged")


def first_step(history: list[dict], key: str, threshold: float, after: int = -1) -> int | None:
    """First evaluated step after `after` at which history[key] >= threshold, else None."""
    for row in history:
        if row["step"] > after and row.get(key, float("-inf")) >= threshold:
            return row["step"]
    return None


def value_at(history: list[dict], key: str, step: int) -> float | None:
    for row in history:
        if row["step"] == step:
            return row.get(key)
    return None


def grokking_times(history: list[dict], threshold: float = 0.99) -> dict[str, Any]:
    """Step of train fit, step of test fit, the delay between them, test accuracy at train fit."""
    t_train = first_step(history, "train_acc", threshold)
    t_test = first_step(history, "test_acc", threshold)
    out = {"t_train": t_train, "t_test": t_test, "delay": None, "delay_factor": None,
           "test_acc_at_fit": value_at(history, "test_acc", t_train) if t_train is not None else None}
    if t_train is not None and t_test is not None:
        out["delay"] = t_test - t_train
        out["delay_factor"] = t_test / max(t_train, 1)
    return out


def plateaus(history: list[dict], key: str, lo: float, hi: float, min_steps: int, after: int = 0) -> list[tuple[int, int]]:
    """Maximal runs of consecutive evals after step `after` with lo <= history[key] <= hi that last at
    least `min_steps` steps: [(first_step, last_step), ...]."""
    out, start, last = [], None, None
    for row in history:
        if row["step"] < after:
            continue
        inside = lo <= row.get(key, float("nan")) <= hi
        if inside and start is None:
            start = row["step"]
        if inside:
            last = row["step"]
        if not inside and start is not None:
            if last - start >= min_steps:
                out.append((start, last))
            start = None
    if start is not None and last - start >= min_steps:
        out.append((start, last))
    return out


def combine(statuses: list[str]) -> str:
    """One status for many runs: any diverged > any fails > any inconclusive > holds."""
    for s in ("diverged", "fails", "inconclusive"):
        if s in statuses:
            return s
    return "holds"


@dataclass
class Verdict:
    protocol: str
    claim: str
    status: str
    measured: dict[str, Any] = field(default_factory=dict)
    criteria: dict[str, Any] = field(default_factory=dict)
    figure: str = "figure.png"
    config: str = "config.yaml"
    seeds: list[int] = field(default_factory=list)
    seconds: float | None = None

    def __post_init__(self):
        assert self.status in STATUSES, self.status

    def to_dict(self) -> dict:
        return asdict(self)
