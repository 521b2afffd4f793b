"""Transition fits: a logistic curve of final test accuracy against log training-set size D, its
midpoint (an estimate of D_crit) and a bootstrap interval over seeds.

    acc(D) = lo + (hi - lo) / (1 + exp(-(log D - log D_mid) / width))
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit


@dataclass
class Transition:
    D_mid: float | None          # the midpoint, in examples (None: no transition in the data)
    lo: float | None = None
    hi: float | None = None
    width: float | None = None   # in log D
    ci: tuple[float, float] | None = None   # bootstrap interval of D_mid over seeds
    n_boot: int = 0

    def curve(self, D):
        D = np.asarray(D, dtype=float)
        return logistic(np.log(D), np.log(self.D_mid), self.width, self.lo, self.hi)


def logistic(logD, log_mid, width, lo, hi):
    return lo + (hi - lo) / (1 + np.exp(-(logD - log_mid) / width))


def _fit(D: np.ndarray, acc: np.ndarray):
    logD = np.log(D)
    span = logD.max() - logD.min()
    if span <= 0 or acc.max() - acc.min() < 0.05:
        return None
    # start at the size where accuracy crosses its mid-range
    order = np.argsort(logD)
    target = (acc.max() + acc.min()) / 2
    above = logD[order][acc[order] >= target]
    p0 = [above[0] if len(above) else logD.mean(), span / 8, acc.min(), acc.max()]
    bounds = ([logD.min() - span, 1e-3, -0.05, 0.0], [logD.max() + span, 2 * span, 1.0, 1.05])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            p, _ = curve_fit(logistic, logD, acc, p0=np.clip(p0, bounds[0], bounds[1]), bounds=bounds, maxfev=20000)
        except (RuntimeError, ValueError):
            return None
    if p[3] - p[2] < 0.05:                    # no rise: no transition to speak of
        return None
    return p


def fit_transition(D, acc, seed_ids=None, n_boot: int = 200, rng_seed: int = 0) -> Transition:
    """Fit acc against D. With seed_ids, the interval resamples whole seeds with replacement."""
    D, acc = np.asarray(D, dtype=float), np.asarray(acc, dtype=float)
    p = _fit(D, acc)
    if p is None:
        return Transition(None)
    out = Transition(float(np.exp(p[0])), float(p[2]), float(p[3]), float(p[1]))
    seeds = np.unique(seed_ids) if seed_ids is not None else None
    if seeds is None or len(seeds) < 2:
        return out
    rng = np.random.default_rng(rng_seed)
    mids = []
    for _ in range(n_boot):
        pick = rng.choice(seeds, size=len(seeds), replace=True)
        rows = np.concatenate([np.flatnonzero(np.asarray(seed_ids) == s) for s in pick])
        q = _fit(D[rows], acc[rows])
        if q is not None:
            mids.append(np.exp(q[0]))
    if mids:
        out.ci = (float(np.percentile(mids, 2.5)), float(np.percentile(mids, 97.5)))
        out.n_boot = len(mids)
    return out


def intervals_overlap(cis: list[tuple[float, float] | None]) -> bool | None:
    """True when every interval overlaps every other (None if any is missing)."""
    if not cis or any(c is None for c in cis):
        return None
    return max(c[0] for c in cis) <= min(c[1] for c in cis)
