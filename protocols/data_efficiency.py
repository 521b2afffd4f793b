"""Data efficiency (seed report 003, Fig. 4): per optimiser / regulariser config, how little training
data suffices to generalise. Report 003's claims: weight decay towards zero makes a network much more
data-efficient, weight decay towards the initialisation less so; noise (update noise, weight noise,
dropout) helps too.

For each config (params.configs: a name -> config overrides, merged over the preset; params.select
narrows them to a list of names) x training
fraction (params.fracs) x seed: a run from scratch for the budget train.steps, ending early once
test accuracy reaches criteria.test_acc (the from-scratch runs of `circuits dcrit --method sweep`).
Per config:
  min_frac   the smallest fraction at which every seed reached criteria.test_acc (None: none did);
  frac_50    the midpoint of a logistic fit of final test accuracy against the fraction, with a
             bootstrap interval over seeds (circuits/fit.py, as `circuits dcrit`); None when the
             accuracy does not reach 0.5 in the range (a midpoint beyond it is an extrapolation).
Each claim in params.claims, {config: A, better_than: B}, is judged on frac_50 (the config needs
less data): holds when A's interval lies wholly below B's (with one seed, no intervals: A's midpoint
below B's), or A generalises somewhere in the range and B nowhere; fails when A needs as much data
or more, or the intervals overlap (not shown); inconclusive when neither generalises in the range.
measured.claims lists each claim's status (circuits.detect.claims_from), measured.claim_details the
midpoints and intervals it was judged on. No threshold decides a claim (midpoints and their
intervals): criteria.test_acc only ends a run early and defines min_frac, which is reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from circuits import plots
from circuits.config import Config, deep_merge, from_dict, protocol_fields, to_dict
from circuits.detect import Verdict, claims_from, combine
from circuits.errors import CircuitsError
from circuits.experiment import LIVE, begin, finish
from circuits.fit import fit_transition
from circuits.tasks import n_inputs, sizes_from
from circuits.validate import check_sizes
from protocols import semigrokking

NAME = "data-efficiency"
CLAIM = "weight decay (towards zero; less so towards the init) and noise let a network generalise from less data"
DEFAULTS = {"configs": {}, "select": None, "fracs": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7], "claims": [], "workers": None,
            "n_boot": 200}
PARAMS_DOC = {
    "configs": "name -> config overrides, one curve each",
    "select": "the config names to run (None: all)",
    "fracs": "training fractions of all inputs (p^2 pairs for x+y) per curve",
    "claims": "[{config: A, better_than: B}]: A needs less data than B",
    "workers": "worker processes (None: one per core)",
    "n_boot": "bootstrap resamples of the seeds for the intervals",
}
CRITERIA = {"test_acc": 0.99}


@dataclass
class Curve:
    name: str
    fracs: list[float]              # one per run
    acc: list[float]                # final test accuracy, one per run
    seeds: list[int]
    min_frac: float | None
    frac_50: float | None
    ci: tuple[float, float] | None


def config_for(cfg: Config, name: str, overrides: dict) -> Config:
    """The preset's config with one config's overrides merged over it."""
    base = to_dict(cfg)
    try:
        return from_dict(Config, deep_merge(base, {**overrides, "params": {}, "criteria": {}, "sweep": {}}),
                         f"params.configs.{name}")
    except CircuitsError as e:
        raise CircuitsError(f"in params.configs.{name}: {e}") from None


def selected(p: dict) -> dict:
    """params.configs, narrowed to params.select when given."""
    if not p["configs"]:
        raise CircuitsError("data-efficiency needs params.configs (a name -> config overrides)")
    names = p["select"] or list(p["configs"])
    unknown = [n for n in names if n not in p["configs"]]
    if unknown:
        raise CircuitsError(f"params.select names unknown config(s) {', '.join(unknown)} (known: {', '.join(p['configs'])})")
    return {n: p["configs"][n] for n in names}


def validate(cfg: Config) -> None:
    """Its params, before anything trains (circuits.validate.validate_run): the configs it names, and
    fractions that leave every config's run a training and a test split."""
    p = protocol_fields(cfg.params, DEFAULTS, "params")
    for name, over in selected(p).items():
        n_all = n_inputs(config_for(cfg, name, over or {}).task)
        check_sizes(p["fracs"], "params.fracs", n_all, n_all - 1, f"config {name}: all {n_all} inputs less one, a test split")


def measure(cfg: Config, p: dict, crit: dict, live_dir: Path) -> tuple[dict[str, Curve], dict, dict]:
    """Every config x fraction x seed from scratch; one curve per config, and the histories."""
    configs = selected(p)
    n_all = n_inputs(cfg.task)
    sizes = sizes_from(p["fracs"], n_all)
    nominal = {sizes_from([f], n_all)[0]: f for f in p["fracs"]}          # size -> the fraction asked for
    jobs, names = [], []
    for name, over in configs.items():
        sub = config_for(cfg, name, over or {})
        sub.criteria = {"grok_acc": crit["test_acc"]}
        js = semigrokking.live_to(semigrokking.scratch_jobs(sub, sizes), live_dir, f"{name}-")
        jobs += js
        names += [name] * len(js)
    hists = semigrokking.run_scratch(jobs, p["workers"], f"data-efficiency {cfg.model.arch}")
    curves = {}
    for name in configs:
        rows = [(j, h) for j, h, n in zip(jobs, hists, names) if n == name]
        fracs = [nominal.get(j.size, j.size / n_all) for j, _ in rows]
        acc = [h[-1].get("test_acc", 0.0) for _, h in rows]
        seeds = [j.seed for j, _ in rows]
        reached = [f for f in sorted(set(fracs)) if all(a >= crit["test_acc"] for x, a in zip(fracs, acc) if x == f)]
        fit = fit_transition(fracs, acc, seeds, n_boot=p["n_boot"])
        inside = fit.D_mid is not None and fit.D_mid <= max(fracs) and max(acc) >= 0.5   # not an extrapolation
        curves[name] = Curve(name, fracs, acc, seeds, reached[0] if reached else None,
                             fit.D_mid if inside else None, fit.ci if inside else None)
    histories = {semigrokking.job_name(j, f"{n}-"): h for j, h, n in zip(jobs, hists, names)}
    networks = {k: v for n in configs for k, v in semigrokking.networks(
        [j for j, m in zip(jobs, names) if m == n], f"{n}-").items()}
    return curves, histories, networks


def better(a: Curve, b: Curve) -> tuple[str, str]:
    """Does config a need less data than config b? (status, why)."""
    if a.frac_50 is None and b.frac_50 is None:
        return "inconclusive", "neither generalises within the fractions and budget"
    if a.frac_50 is None:
        return "fails", f"{a.name} does not generalise in the range, {b.name} does"
    if b.frac_50 is None:
        return "holds", f"{a.name} generalises in the range, {b.name} does not"
    if a.ci and b.ci:
        if a.ci[1] < b.ci[0]:
            return "holds", "intervals apart"
        return "fails", "intervals overlap (not shown)" if a.ci[0] <= b.ci[1] else "needs more data"
    return ("holds" if a.frac_50 < b.frac_50 else "fails"), "midpoints only (one seed: no intervals)"


def judge(curves: dict[str, Curve], claims: list[dict]) -> list[dict]:
    out = []
    for c in claims:
        a, b = c.get("config"), c.get("better_than")
        if a not in curves or b not in curves:
            raise CircuitsError(f"params.claims: {c} names a config not in params.configs ({', '.join(curves)})")
        status, why = better(curves[a], curves[b])
        out.append({"claim": f"{a} needs less data than {b}", "status": status, "why": why,
                    "frac_50": [curves[a].frac_50, curves[b].frac_50], "ci": [curves[a].ci, curves[b].ci]})
    return out


def verdict_status(claims: list[dict]) -> str:
    """The verdict: its claims combined (circuits.detect.combine); inconclusive without claims."""
    return combine([c["status"] for c in claims]) if claims else "inconclusive"


def run(cfg: Config, run_dir) -> Verdict:
    p, crit = protocol_fields(cfg.params, DEFAULTS, "params"), protocol_fields(cfg.criteria, CRITERIA, "criteria")
    started = begin(cfg, run_dir)
    curves, histories, networks = measure(cfg, p, crit, Path(run_dir) / LIVE)
    claims = judge(curves, p["claims"])
    measured = {"p": cfg.task.p, "arch": cfg.model.arch, "claims": claims_from({c["claim"]: c["status"] for c in claims}),
                "claim_details": claims,
                "configs": {n: {"min_frac": c.min_frac, "frac_50": c.frac_50, "frac_50_ci": c.ci,
                                "points": list(zip(c.fracs, c.acc))} for n, c in curves.items()}}
    status = verdict_status(claims)
    verdict = Verdict(NAME, CLAIM, status, measured, crit, seeds=list(cfg.seeds))
    figure(cfg, curves, crit, run_dir)
    return finish(cfg, run_dir, verdict, histories, started, networks)


def figure(cfg: Config, curves: dict[str, Curve], crit: dict, run_dir) -> None:
    n = len(curves)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, ax = plots.subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows), sharex=True, sharey=True)
    grid = np.linspace(min(min(c.fracs) for c in curves.values()), max(max(c.fracs) for c in curves.values()), 100)
    for i, c in enumerate(curves.values()):
        a = ax[i // cols, i % cols]
        a.scatter(c.fracs, c.acc, s=14, color="C0", alpha=0.7)
        fit = fit_transition(c.fracs, c.acc)
        if fit.D_mid:
            a.plot(grid, fit.curve(grid), color="C0", lw=1)
        if c.frac_50:
            a.axvline(c.frac_50, color="C3", ls="--", lw=0.8)
            if c.ci:
                a.axvspan(*c.ci, color="C3", alpha=0.1)
        a.axhline(crit["test_acc"], color="grey", ls=":", lw=0.8)
        mid = f"{c.frac_50:.2f}" if c.frac_50 else "none"
        a.set_title(f"{c.name}\nmidpoint {mid}, min frac {c.min_frac}", fontsize=8)
        a.set(xlabel="training fraction", ylabel="final test accuracy")
    for j in range(n, rows * cols):
        ax[j // cols, j % cols].axis("off")
    fig.suptitle(f"data efficiency: {cfg.model.arch}, (x + y) mod {cfg.task.p}, {cfg.train.steps} steps", fontsize=9)
    plots.save(fig, run_dir, cfg)
