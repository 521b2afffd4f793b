"""Phenomenon detectors over a run's history (a list of eval rows {step, train_acc, test_acc, ...}),
the verdict, and how statuses combine.

Status: `holds` (the written criteria are met), `fails` (judged and not met), `inconclusive` (the
budget ran out before the criterion could be judged), `diverged` (NaN/inf loss).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("holds", "fails", "inconclusive", "diverged")


def first_step(history: list[dict], key: str, threshold: float, after: int = -1, below: bool = False) -> int | None:
    """First evaluated step after `after` at which history[key] >= threshold (<= with below), else None."""
    for row in history:
        if row["step"] > after and key in row and (row[key] <= threshold if below else row[key] >= threshold):
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


def plateaus(history: list[dict], key: str, lo: float, hi: float, min_steps: int, after: int = 0,
             max_spread: float = 1.0) -> list[tuple[int, int]]:
    """Runs of consecutive evals after step `after` with lo <= history[key] <= hi, whose values stay
    within `max_spread` of each other (flat, not a slow rise through the band), lasting at least
    `min_steps` steps: [(first_step, last_step), ...]."""
    rows = [r for r in history if r["step"] >= after and key in r]
    out, i = [], 0
    while i < len(rows):
        if not lo <= rows[i][key] <= hi:
            i += 1
            continue
        j, vmin, vmax = i, rows[i][key], rows[i][key]
        while j + 1 < len(rows) and lo <= rows[j + 1][key] <= hi:
            v = rows[j + 1][key]
            if max(vmax, v) - min(vmin, v) > max_spread:
                break
            j, vmin, vmax = j + 1, min(vmin, v), max(vmax, v)
        if rows[j]["step"] - rows[i]["step"] >= min_steps:
            out.append((rows[i]["step"], rows[j]["step"]))
            i = j + 1
        else:
            i += 1
    return out


def settle_window(lr: float, wd: float, decay_times: float) -> float:
    """decay_times decay times 1 / (lr * wd), in steps (inf without weight decay)."""
    return decay_times / (lr * wd) if lr > 0 and wd > 0 else float("inf")


def settled(history: list[dict], window: float, tol: float, key: str = "test_acc", relative: bool = False) -> bool:
    """Did the run settle: over its last `window` steps (it must have run that long) `key` moved at
    most tol (relative: at most tol times its largest magnitude there)?"""
    if not history or history[-1]["step"] - history[0]["step"] < window:
        return False
    last = [r for r in history if r["step"] >= history[-1]["step"] - window]
    vals = [r[key] for r in last if r.get(key) is not None]
    if not vals:
        return False
    spread = max(vals) - min(vals)
    return spread <= tol * max(abs(v) for v in vals) if relative else spread <= tol


def held(history: list[dict], window: float, lo: float, hi: float | None, key: str = "test_acc") -> bool:
    """Has the run held an end state over its last `window` steps (it must have run that long):
    `key` below lo at every row there (e.g. ungrokked), or at least hi at every row (kept; hi None:
    no such state, for runs that start there and may still leave it)?"""
    if not history or history[-1]["step"] - history[0]["step"] < window:
        return False
    vals = [r[key] for r in history if r["step"] >= history[-1]["step"] - window and r.get(key) is not None]
    return bool(vals) and (all(v < lo for v in vals) or (hi is not None and all(v >= hi for v in vals)))


def settle_stop(window: float, tol: float, keys: tuple[str, ...] = ("test_acc",), relative: bool = False,
                end: tuple[float, float, float] | None = None):
    """A stop rule for circuits.train: True once every key has settled over the last `window` steps,
    or (with end = (end_window, lo, hi)) once keys[0] has held an end state over end_window steps.
    It keeps the rows it has seen (a resumed run shows it its earlier rows first)."""
    seen = []

    def stop(row: dict) -> bool:
        seen.append(row)
        if end is not None and held(seen, end[0], end[1], end[2], keys[0]):
            return True
        return all(settled(seen, window, tol, k, relative) for k in keys)
    return stop


def combine(statuses: list[str]) -> str:
    """One status for many runs: any diverged > any fails > any inconclusive > holds."""
    for s in ("diverged", "fails", "inconclusive"):
        if s in statuses:
            return s
    return "holds"


def claims_from(statuses: dict[str, str]) -> list[dict]:
    """A multi-claim verdict's `measured.claims`: [{claim, status}], one per claim it judges, so that
    `circuits check` can expect each claim separately (`claims:` of a check variant)."""
    for s in statuses.values():
        assert s in STATUSES, s
    return [{"claim": c, "status": s} for c, s in statuses.items()]


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
    rationale: dict[str, str] = field(default_factory=dict)   # criterion -> the claim it tests (YAML)

    def __post_init__(self):
        assert self.status in STATUSES, self.status

    def to_dict(self) -> dict:
        return asdict(self)
