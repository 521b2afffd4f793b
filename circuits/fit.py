"""Estimates over seeds and the comparisons verdicts make with them; transition fits.

Honest uncertainty: an *interval* (`Estimate.ci`, a 95% bootstrap interval resampling whole seeds)
is computed only from at least MIN_SEEDS seeds. With fewer, an estimate carries a `seed_range`
(min..max of the per-seed estimates), labelled as a range: it is never called a confidence interval
and no comparison gates on it. Comparisons (`inside`, `below`, `within`, `agree`) answer True,
False or None (cannot tell): with intervals on both sides they use the intervals; otherwise the
point estimates against a stated margin or tolerance. `status` turns the answer into a verdict
status, `sensitivity` re-judges a verdict at neighbouring thresholds.

Transition fits: a logistic curve of final test accuracy against log training-set size D,

    acc(D) = lo + (hi - lo) / (1 + exp(-(log D - log D_mid) / width)),

its midpoint (an estimate of D_crit) and width in log D, each an Estimate over seeds.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy.optimize import curve_fit

MIN_SEEDS = 5          # fewer seeds: a seed range, not an interval
CI_IS = "95% bootstrap interval, resampling whole seeds"
RANGE_IS = "min..max of per-seed estimates: a range, not a confidence interval (fewer than 5 seeds)"


@dataclass
class Estimate:
    """A number measured over seeds, with its uncertainty as far as the seeds allow."""
    value: float | None
    n_seeds: int = 0
    ci: tuple[float, float] | None = None            # only from >= MIN_SEEDS seeds
    seed_range: tuple[float, float] | None = None    # min..max of per-seed estimates (>= 2 of them)
    n_boot: int = 0                                  # bootstrap resamples that gave a value
    n_distinct: int = 0                              # distinct resamples (multisets of seeds) among them

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"value": self.value, "n_seeds": self.n_seeds}
        if self.ci is not None:
            d.update({"ci": list(self.ci), "ci_is": CI_IS, "n_boot": self.n_boot, "n_distinct_resamples": self.n_distinct})
        if self.seed_range is not None:
            d.update({"seed_range": list(self.seed_range),
                      "seed_range_is": RANGE_IS if self.ci is None else "min..max of per-seed estimates"})
        return d


def _value(x) -> float | None:
    return x.value if isinstance(x, Estimate) else (None if x is None else float(x))


def _ci(x) -> tuple[float, float] | None:
    return x.ci if isinstance(x, Estimate) else None


def over_seeds(rows: list, seed_of: Callable[[Any], Any], stat: Callable[[list], dict[str, float | None]],
               n_boot: int = 200, rng_seed: int = 0) -> dict[str, Estimate]:
    """Estimates of the numbers stat(rows) returns ({name: value or None}, the same names for any rows):
    the value from all rows; the seed range from each seed's rows alone; with >= MIN_SEEDS seeds, a
    bootstrap interval resampling whole seeds with replacement (needs >= 10 resamples that give a value)."""
    seeds = sorted({seed_of(r) for r in rows}, key=str)
    by_seed = {s: [r for r in rows if seed_of(r) == s] for s in seeds}
    full = stat(rows)
    out = {k: Estimate(None if v is None else float(v), len(seeds)) for k, v in full.items()}
    if len(seeds) >= 2:
        per = [stat(by_seed[s]) for s in seeds]
        for k, e in out.items():
            vals = [x[k] for x in per if x.get(k) is not None]
            if len(vals) >= 2:
                e.seed_range = (float(min(vals)), float(max(vals)))
    if len(seeds) >= MIN_SEEDS and n_boot > 0:
        rng = np.random.default_rng(rng_seed)
        boot = {k: [] for k in out}
        picks = {k: set() for k in out}
        for _ in range(n_boot):
            pick = tuple(sorted(rng.integers(0, len(seeds), size=len(seeds)).tolist()))
            res = stat([r for i in pick for r in by_seed[seeds[i]]])
            for k in out:
                if res.get(k) is not None and np.isfinite(res[k]):
                    boot[k].append(res[k])
                    picks[k].add(pick)
        for k, e in out.items():
            if e.value is not None and len(boot[k]) >= 10:
                e.ci = (float(np.percentile(boot[k], 2.5)), float(np.percentile(boot[k], 97.5)))
                e.n_boot, e.n_distinct = len(boot[k]), len(picks[k])
    return out


# --- comparisons: True, False, or None (cannot tell) ------------------------------------------

def status(x: bool | None) -> str:
    return {True: "holds", False: "fails", None: "inconclusive"}[x]


def inside(e, lo: float = -math.inf, hi: float = math.inf) -> bool | None:
    """Is e within [lo, hi]? With an interval: True if it lies wholly inside, False if wholly outside,
    else None. Without: the point estimate."""
    v, ci = _value(e), _ci(e)
    if v is None:
        return None
    if ci is not None:
        if lo <= ci[0] and ci[1] <= hi:
            return True
        if ci[1] < lo or ci[0] > hi:
            return False
        return None
    return lo <= v <= hi


def below(a, b, margin: float = 0.0, relative: bool = True) -> bool | None:
    """Is a below b? With intervals on both: True if a's lies wholly below b's, False if wholly above,
    else None. Otherwise the point estimates must differ by more than `margin` (relative: a ratio
    above 1 + margin, for positive numbers; else a difference above margin), else None."""
    va, vb = _value(a), _value(b)
    if va is None or vb is None:
        return None
    ca, cb = _ci(a), _ci(b)
    if ca is not None and cb is not None:
        if ca[1] < cb[0]:
            return True
        if ca[0] > cb[1]:
            return False
        return None
    if relative:
        if va <= 0 or vb <= 0:
            return None
        gap = vb / va - 1 if vb >= va else -(va / vb - 1)
    else:
        gap = vb - va
    if gap > margin:
        return True
    if -gap > margin:
        return False
    return None


def compare(a, b, margin: float = 0.0, relative: bool = True) -> str | None:
    """'below', 'above' or 'indistinct' (None: an estimate is missing), by `below`'s rules."""
    if _value(a) is None or _value(b) is None:
        return None
    return {True: "below", False: "above", None: "indistinct"}[below(a, b, margin, relative)]


def _spread(e) -> float | None:
    """The relative spread max/min - 1 of e's seed range (positive numbers), None without one."""
    r = e.seed_range if isinstance(e, Estimate) else None
    if r is None or r[0] <= 0:
        return None
    return r[1] / r[0] - 1


def within(a, b, rel_tol: float) -> bool | None:
    """Do a and b (positive) agree within a ratio of 1 + rel_tol? With intervals on both, an
    equivalence test on the (conservative) interval of the ratio: True if it lies wholly within
    [1/(1 + rel_tol), 1 + rel_tol], False if wholly outside, else None. Otherwise the point estimates
    given the seed spread s (max/min - 1 of the wider seed range, 0 without one): True if their ratio
    is within 1 + rel_tol and s <= rel_tol, False if it exceeds (1 + rel_tol)(1 + s), else None. The
    range's width, not its overlap, enters: ranges are never gated on overlapping."""
    va, vb = _value(a), _value(b)
    if va is None or vb is None or va <= 0 or vb <= 0:
        return None
    band = 1 + rel_tol
    ca, cb = _ci(a), _ci(b)
    if ca is not None and cb is not None and ca[0] > 0 and cb[0] > 0:
        worst = max(ca[1] / cb[0], cb[1] / ca[0])                  # the ratio's interval, either way
        best = max(ca[0] / cb[1], cb[0] / ca[1])
        if worst <= band:
            return True
        if best > band:
            return False
        return None
    spread = max([x for x in (_spread(a), _spread(b)) if x is not None] or [0.0])
    r = max(va, vb) / min(va, vb)
    if r <= band and spread <= rel_tol:
        return True
    if r > band * (1 + spread):
        return False
    return None


def agree(estimates: list, rel_tol: float) -> bool | None:
    """`within` for every pair: False if any pair disagrees, True if every pair agrees, else None."""
    pairs = [within(a, b, rel_tol) for i, a in enumerate(estimates) for b in estimates[i + 1:]]
    if not pairs:
        return None
    if any(p is False for p in pairs):
        return False
    return True if all(p is True for p in pairs) else None


def ratio(a: Estimate, b: Estimate) -> Estimate:
    """a / b (positive): the interval (or seed range) from the two intervals (ranges), conservatively."""
    va, vb = _value(a), _value(b)
    if va is None or vb is None or vb <= 0:
        return Estimate(None, min(a.n_seeds, b.n_seeds))
    out = Estimate(va / vb, min(a.n_seeds, b.n_seeds))
    if a.ci and b.ci and b.ci[0] > 0:
        out.ci = (a.ci[0] / b.ci[1], a.ci[1] / b.ci[0])
        out.n_boot, out.n_distinct = min(a.n_boot, b.n_boot), min(a.n_distinct, b.n_distinct)
    ra, rb = a.seed_range or a.ci, b.seed_range or b.ci
    if (a.seed_range or b.seed_range) and ra and rb and rb[0] > 0:
        out.seed_range = (ra[0] / rb[1], ra[1] / rb[0])
    return out


FACTORS = (0.5, 0.75, 1.0, 1.5, 2.0)


def sensitivity(judge: Callable[[dict], dict[str, str]], crit: dict, keys: dict,
                factors=FACTORS, complement=()) -> dict[str, dict[str, str]]:
    """{criterion: {threshold: status of the claim(s) it tests}} with each threshold in `keys` (criterion
    -> claim, or a list of claims: their combined status) scaled by the factors, the others kept; judge(crit) -> {claim: status}. For a key in
    `complement` (a minimum accuracy, say 0.9) the distance to 1 is scaled instead (0.95, 0.925, ...)."""
    from circuits.detect import combine

    out = {}
    judged_now = judge(crit)
    for k, claims in keys.items():
        claims = [claims] if isinstance(claims, str) else list(claims)
        if k not in crit or not any(c in judged_now for c in claims):      # a claim not judged here
            continue
        row = {}
        for f in factors:
            v = 1 - (1 - crit[k]) * f if k in complement else crit[k] * f
            v = round(v, 6)
            judged = judge({**crit, k: v})
            row[f"{v:g}"] = combine([judged.get(c, "inconclusive") for c in claims])
        out[k] = row
    return out


# --- transition fits ---------------------------------------------------------------------------

@dataclass
class Transition:
    D_mid: float | None          # the midpoint, in examples (None: no transition in the data)
    lo: float | None = None
    hi: float | None = None
    width: float | None = None   # in log D
    ci: tuple[float, float] | None = None   # bootstrap interval of D_mid over >= MIN_SEEDS seeds
    n_boot: int = 0
    mid: Estimate = field(default_factory=lambda: Estimate(None))
    width_est: Estimate = field(default_factory=lambda: Estimate(None))

    @property
    def n_seeds(self) -> int:
        return self.mid.n_seeds

    @property
    def seed_range(self) -> tuple[float, float] | None:
        return self.mid.seed_range

    def curve(self, D):
        D = np.asarray(D, dtype=float)
        return logistic(np.log(D), np.log(self.D_mid), self.width, self.lo, self.hi)


def logistic(logD, log_mid, width, lo, hi):
    return lo + (hi - lo) / (1 + np.exp(-(logD - log_mid) / width))


def _fit(D: np.ndarray, acc: np.ndarray):
    logD = np.log(D)
    span = logD.max() - logD.min() if len(logD) else 0.0
    if len(np.unique(logD)) < 2 or span <= 0 or acc.max() - acc.min() < 0.05:
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
    """Fit acc against D. With seed_ids: per-seed fits give seed ranges of the midpoint and width, and
    with >= MIN_SEEDS seeds a bootstrap resampling whole seeds gives their intervals."""
    D, acc = np.asarray(D, dtype=float), np.asarray(acc, dtype=float)
    p = _fit(D, acc)
    if p is None:
        n = len(np.unique(seed_ids)) if seed_ids is not None else (1 if len(D) else 0)
        return Transition(None, mid=Estimate(None, n), width_est=Estimate(None, n))
    seeds = list(seed_ids) if seed_ids is not None else [0] * len(D)
    rows = list(zip(D, acc, seeds))

    def stat(rs):
        q = _fit(np.array([r[0] for r in rs]), np.array([r[1] for r in rs]))
        return {"mid": None if q is None else float(np.exp(q[0])), "width": None if q is None else float(q[1])}

    est = over_seeds(rows, lambda r: r[2], stat, n_boot, rng_seed)
    mid, width = est["mid"], est["width"]
    mid.value, width.value = float(np.exp(p[0])), float(p[1])       # the fit above (stat(rows) gives the same)
    return Transition(mid.value, float(p[2]), float(p[3]), width.value, mid.ci, mid.n_boot, mid, width)


def intervals_overlap(cis: list[tuple[float, float] | None]) -> bool | None:
    """True when every interval overlaps every other (None if any is missing). Reported, not gated on:
    overlap is no test of agreement (use `within` / `agree`)."""
    if not cis or any(c is None for c in cis):
        return None
    return max(c[0] for c in cis) <= min(c[1] for c in cis)
