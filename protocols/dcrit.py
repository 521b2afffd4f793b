"""D_crit: the training-set size at which C_mem and C_gen are equally efficient, estimated by three
independent methods side by side (Varma et al. 2023, Sec. 4-5).

  sweep       from scratch at sizes D x seeds for a fixed budget (params.sweep: sizes, steps; its
              seeds, default all seeds: runs from scratch cost the most); a logistic fit of final
              test accuracy against ln D; D_crit is its midpoint;
  ungrokking  a grokked network trained on nested subsets of sizes D' (protocols/ungrokking.py,
              params.ungrokking; its grok_seeds pick the grokked networks, default all seeds; the
              seeds of its fit are (network, subset) pairs); the same fit;
  efficiency  where the C_mem norm-at-fixed-logit line crosses the flat C_gen norm
              (protocols/efficiency.py, params.efficiency);
  all         the three, their order and the hysteresis ratio ungrokking / sweep;
  a list      some of them, comma-separated (`ungrokking,efficiency`: the paper preset's default, as
              runs from scratch at p = 113 need 1e5 steps each): their order, and the hysteresis ratio
              where both ungrokking and sweep are in it.
Each estimate carries its uncertainty as circuits/fit.py allows: a 95% bootstrap interval over seeds
from >= 5 seeds, else a seed range (min..max of per-seed estimates), which is reported and never
gated on.

With several weight decays (params.weight_decays, `circuits dcrit --wd 0.3,1,3`) every method
estimates D_crit per weight decay, with step budgets scaled by (config weight decay / wd) so that each
gets the same decay budget lr * wd * steps.

Claims judged (each in measured.claims; the status combines them):
  estimate    every method yields an estimate (a fit whose accuracy rises by >= criteria.min_rise
              across the sizes; an efficiency crossing);
  order       (two methods or more) ungrokking < efficiency < from scratch, for those run, at every weight decay (THEORY.md:
              ungrokking happens at D << D_crit, grokking from scratch needs D > D_crit): with
              intervals on both sides, the intervals apart; otherwise the point estimates more than
              criteria.order_margin apart (relative); inverted beyond that: fails;
  hysteresis  (ungrokking and sweep) ungrokking / from scratch <= criteria.hysteresis_ratio_max (THEORY.md: the
              ungrokking threshold is less than half the semi-grokking one);
  weight decay (several weight decays) each method's estimates agree within a ratio
              1 + criteria.wd_rel_tol (circuits.fit.agree: an equivalence test on the intervals with
              >= 5 seeds, the point estimates otherwise, unless the seed spread exceeds the tolerance).
measured.sensitivity re-judges each claim at 0.5x-2x its threshold. Whether all three intervals
overlap is reported, not judged.
"""
from __future__ import annotations

import os

from dataclasses import replace
from pathlib import Path

import numpy as np

from circuits import plots
from circuits.config import Config, protocol_fields
from circuits.detect import Verdict, claims_from, combine
from circuits.errors import CircuitsError
from circuits.experiment import LIVE, begin, finish
from circuits.fit import Estimate, agree, below, fit_transition, inside, intervals_overlap, ratio, sensitivity, status
from circuits.tasks import n_inputs, sizes_from
from circuits.validate import check_at_least, check_optional_bool, check_seed_list, check_sizes
from protocols import efficiency, semigrokking, ungrokking

NAME = "dcrit"
CLAIM = ("D_crit, where C_mem and C_gen are equally efficient: ungrokking < efficiency < from scratch, "
         "with hysteresis, for any weight decay")
METHODS = ("sweep", "ungrokking", "efficiency")                 # the order they run in
ORDERED = ("ungrokking", "efficiency", "sweep")                  # the order their D_crit should take
DEFAULTS = {"method": "all", "weight_decays": None, "workers": None,
            "sweep": {"sizes": [0.2, 0.25, 0.3, 0.35, 0.4, 0.5], "steps": 4000, "eval_every": 50, "n_boot": 200,
                      "stack": None, "seeds": None},
            "ungrokking": {}, "efficiency": {}}
PARAMS_DOC = {
    "method": "sweep | ungrokking | efficiency | all | a comma list of them (ungrokking,efficiency)",
    "weight_decays": "weight decays to estimate at (None: the config's; --wd)",
    "workers": "worker processes (None: one per core)",
    "sweep": "the from-scratch sweep: {sizes, steps, eval_every, n_boot, stack (None: stacked on CUDA), "
             "seeds (None: the config's)}",
    "ungrokking": "the ungrokking protocol's params for its estimate (grok_seeds: the grokked networks)",
    "efficiency": "the efficiency protocol's params for its crossing",
}
CRITERIA = {"min_rise": 0.5, "order_margin": 0.1, "hysteresis_ratio_max": 0.5, "wd_rel_tol": 0.15}

ESTIMATE = "every method yields an estimate of D_crit"
ORDER = "ungrokking D_crit < efficiency D_crit < from-scratch D_crit"
HYSTERESIS = "the ungrokking D_crit is at most criteria.hysteresis_ratio_max of the from-scratch one (hysteresis)"
WD = "each method's D_crit does not depend on weight decay (within criteria.wd_rel_tol)"
CRIT_CLAIM = {"min_rise": ESTIMATE, "order_margin": ORDER, "hysteresis_ratio_max": HYSTERESIS, "wd_rel_tol": WD}


def methods_of(p: dict) -> list[str]:
    """The methods to run, in METHODS order, from "all", one name or a comma list of names."""
    m = p["method"]
    if m == "all":
        return list(METHODS)
    names = [x.strip() for x in m.split(",")] if isinstance(m, str) else []
    if not names or any(x not in METHODS for x in names) or len(set(names)) < len(names):
        raise CircuitsError(f"--method must be sweep, ungrokking, efficiency, all or a comma list of them "
                            f"(ungrokking,efficiency), got {m!r}")
    return [x for x in METHODS if x in names]


def check_overrides(cfg: Config, overrides: list[str]) -> None:
    """A `--set params.METHOD...` for a method this run does not run would change nothing: refused in
    one line (the paper preset runs ungrokking and efficiency only, so a sweep setting needs --method)."""
    methods = methods_of(protocol_fields(cfg.params, DEFAULTS, "params"))
    for item in overrides:
        parts = item.split("=", 1)[0].strip().split(".")
        if len(parts) > 1 and parts[0] == "params" and parts[1] in METHODS and parts[1] not in methods:
            raise CircuitsError(f"{item.split('=', 1)[0].strip()} is set, but this run does not run the {parts[1]} "
                                f"method (params.method {cfg.params.get('method')!r}): add --method all or a "
                                f"list with {parts[1]} in it")


def weight_decays(cfg: Config, p: dict) -> list[float]:
    wds = p["weight_decays"] or [cfg.optim.weight_decay]
    wds = [float(w) for w in (wds if isinstance(wds, (list, tuple)) else [wds])]
    if any(not w > 0 for w in wds):
        raise CircuitsError(f"--wd values must be > 0, got {wds}")
    return wds


def scaled(steps: int, cfg: Config, wd: float) -> int:
    """The same decay budget lr * wd * steps as `steps` at the config's weight decay."""
    return max(1, int(round(steps * cfg.optim.weight_decay / wd)))


def estimate(est: Estimate, n_all: int, **extra) -> dict:
    """One method's estimate at one weight decay: the Estimate and its numbers for the verdict."""
    return {"est": est, "D_crit": est.value, "ci": est.ci, "seed_range": est.seed_range, "n_seeds": est.n_seeds,
            "n_boot": est.n_boot, "n_distinct_resamples": est.n_distinct,
            "frac": est.value / n_all if est.value else None, **extra}


def from_fit(fit, n_all: int, **extra) -> dict:
    rise = fit.hi - fit.lo if fit.D_mid is not None else None
    return estimate(fit.mid, n_all, lo=fit.lo, hi=fit.hi, rise=rise, fit=fit, **extra)


def sweep_jobs(cfg: Config, p: dict, wd: float) -> list:
    """The from-scratch runs of the sweep method at one weight decay (semigrokking's jobs)."""
    sp = {**DEFAULTS["sweep"], **p["sweep"]}
    sub = replace(cfg, protocol="semigrokking", params={}, criteria={}, seeds=list(sp["seeds"] or cfg.seeds),
                  optim=replace(cfg.optim, weight_decay=wd),
                  train=replace(cfg.train, steps=scaled(sp["steps"], cfg, wd), eval_every=sp["eval_every"]))
    return semigrokking.scratch_jobs(sub, sizes_from(sp["sizes"], n_inputs(cfg.task)))


def ungrokking_config(cfg: Config, p: dict, wds: list[float]) -> Config:
    """The ungrokking protocol's config for the ungrokking method (one grokked network per grok seed)."""
    params = {**p["ungrokking"], "weight_decays": wds, "equal_decay_budget": True}
    grok_seeds = params.pop("grok_seeds", None) or cfg.seeds      # the grokked networks (subset seeds vary too)
    return replace(cfg, protocol="ungrokking", params=params, criteria={}, seeds=list(grok_seeds))


def efficiency_config(cfg: Config, p: dict, wd: float) -> Config:
    """The efficiency protocol's config for the efficiency method at one weight decay."""
    ep = protocol_fields(p["efficiency"], efficiency.DEFAULTS, "params.efficiency")
    steps, gen_steps = ep["steps"], ep["gen_steps"] or ep["steps"]
    return replace(cfg, protocol="efficiency", criteria={}, optim=replace(cfg.optim, weight_decay=wd),
                   params={**p["efficiency"], "steps": scaled(steps, cfg, wd), "gen_steps": scaled(gen_steps, cfg, wd)})


def validate(cfg: Config) -> None:
    """Its params, before anything trains (circuits.validate.validate_run): the method, the weight
    decays, the sweep's sizes and steps, and each method's params as that protocol checks its own."""
    p = protocol_fields(cfg.params, DEFAULTS, "params")
    methods, wds = methods_of(p), weight_decays(cfg, p)
    if "sweep" in methods:
        sp, n_all = {**DEFAULTS["sweep"], **p["sweep"]}, n_inputs(cfg.task)
        check_sizes(sp["sizes"], "params.sweep.sizes", n_all, n_all - 1, f"all {n_all} inputs less one: a run keeps a test split")
        for key in ("steps", "eval_every", "n_boot"):
            check_at_least(sp[key], f"params.sweep.{key}", 1)
        check_optional_bool(sp["stack"], "params.sweep.stack")
        if sp["seeds"] is not None:
            check_seed_list(sp["seeds"], "params.sweep.seeds")
    subs = {"ungrokking": lambda: ungrokking.validate(ungrokking_config(cfg, p, wds)),
            "efficiency": lambda: efficiency.validate(efficiency_config(cfg, p, wds[0]))}
    for method in [m for m in methods if m in subs]:
        try:
            subs[method]()
        except CircuitsError as e:                           # named as dcrit's user gives them
            raise CircuitsError(str(e).replace("params.", f"params.{method}.")) from None


def budget(cfg: Config) -> list[tuple[int, int, int]]:
    """Every run of every method not done yet, at its step cap, for the run's time bound (circuits.estimate)."""
    p = protocol_fields(cfg.params, DEFAULTS, "params")
    methods, wds = methods_of(p), weight_decays(cfg, p)
    workers = p["workers"] or os.cpu_count() or 1
    plan = []
    if "sweep" in methods:
        plan += [(j.size, left, workers) for wd in wds for j in sweep_jobs(cfg, p, wd)
                 if (left := semigrokking.steps_to_train(j))]
    if "ungrokking" in methods:
        plan += ungrokking.budget(ungrokking_config(cfg, p, wds))
    if "efficiency" in methods:
        plan += [x for wd in wds for x in efficiency.budget(efficiency_config(cfg, p, wd))]
    return plan


def by_sweep(cfg: Config, p: dict, wd: float, live_dir: Path) -> dict:
    """From scratch at every size x seed for the budget; the fit of final test accuracy against D."""
    sp = {**DEFAULTS["sweep"], **p["sweep"]}
    jobs = semigrokking.live_to(sweep_jobs(cfg, p, wd), live_dir, f"sweep-wd{wd:g}-")
    hists = semigrokking.run_scratch(jobs, p["workers"], f"dcrit sweep {cfg.model.arch} wd {wd:g}", sp["stack"])
    D, acc = [j.size for j in jobs], [h[-1].get("test_acc", 0.0) for h in hists]
    fit = fit_transition(D, acc, [j.seed for j in jobs], n_boot=sp["n_boot"])
    return from_fit(fit, n_inputs(cfg.task), points=list(zip(D, acc)),
                    histories={semigrokking.job_name(j, f"sweep-wd{wd:g}-"): h for j, h in zip(jobs, hists)},
                    networks=semigrokking.networks(jobs, f"sweep-wd{wd:g}-"))


def by_ungrokking(cfg: Config, p: dict, wds: list[float], live_dir: Path) -> dict[float, dict]:
    """The ungrokking protocol's measurement (one grokked network per seed, every wd on its subsets)."""
    m = ungrokking.measure(ungrokking_config(cfg, p, wds), live_dir / "ungrokking")
    out = {}
    for wd in wds:
        s = m.per_wd.get(wd)
        if s is None:
            out[wd] = {**estimate(Estimate(None), n_inputs(cfg.task)), "rise": None, "fit": None, "points": [],
                       "histories": {}, "note": "no network grokked within the pretraining budget"}
            continue
        pts = [(j.size, h[-1]["test_acc"]) for j, h in zip(m.jobs, m.hists) if j.weight_decay == wd]
        out[wd] = from_fit(s["fit"], n_inputs(cfg.task), points=pts, histories={},
                           settled=f"{s['n_settled']}/{s['n_runs']}")
    out[wds[0]]["histories"] = m.histories
    out[wds[0]]["networks"] = {f"ungrokking-{k}": v for k, v in m.networks.items()}
    return out


def by_efficiency(cfg: Config, p: dict, wd: float, live_dir: Path) -> dict:
    ep = protocol_fields(p["efficiency"], efficiency.DEFAULTS, "params.efficiency")
    sub = efficiency_config(cfg, p, wd)
    results = efficiency.measure(sub, f"dcrit efficiency wd {wd:g}", live_dir / f"efficiency-wd{wd:g}")
    crit = protocol_fields({}, efficiency.CRITERIA, "criteria")
    status_, m = efficiency.analyse(results, crit, ep["n_boot"], n_inputs(cfg.task))
    est = m["estimates"]["D_crit"] if "estimates" in m else Estimate(None)
    return estimate(est, n_inputs(cfg.task), status=status_, mem_exponent=m.get("mem_exponent"),
                    gen_exponent=m.get("gen_exponent"), extrapolated=m.get("extrapolated"),
                    rise=None, fit=None, points=[], histories={},
                    networks=efficiency.networks(sub, f"efficiency-wd{wd:g}-"))


def method_status(method: str, est: dict, crit: dict) -> str:
    """Did the method yield an estimate: a fit whose accuracy rises by >= min_rise with its midpoint
    inside the sizes measured, or a crossing?"""
    if est["D_crit"] is None:
        return "inconclusive"
    if method == "efficiency":
        return "holds"
    if est["rise"] is None or est["rise"] < crit["min_rise"]:
        return "fails"
    D = [d for d, _ in est.get("points") or []]
    if D and not min(D) <= est["D_crit"] <= max(D):
        return "inconclusive"                     # the midpoint is an extrapolation beyond the sizes
    return "holds"


def ordered(ests: dict[str, dict], margin: float = 0.0) -> bool | None:
    """ungrokking < efficiency < sweep, over the methods in ests (two or three): True if every step
    between neighbours is clearly below (circuits.fit.below: the intervals apart, or point estimates
    more than `margin` apart), False if any is clearly inverted, else None (an estimate missing, or
    too close to tell)."""
    chain = [ests[m]["est"] for m in ORDERED if m in ests]
    steps = [below(a, b, margin) for a, b in zip(chain, chain[1:])]
    if any(x is False for x in steps):
        return False
    return True if all(x is True for x in steps) else None


def judge(ests: dict[str, dict[float, dict]], crit: dict) -> dict[str, str]:
    """{claim: status} from {method: {wd: estimate()}} (`est`, `rise`, `points` are read). Only a
    method's estimate that holds enters the comparisons (else they cannot tell: inconclusive)."""
    claims = {ESTIMATE: combine([method_status(m, e, crit) for m, per_wd in ests.items() for e in per_wd.values()])}
    ok = {m: {wd: {"est": e["est"] if method_status(m, e, crit) == "holds" else Estimate(None, e["est"].n_seeds)}
              for wd, e in per_wd.items()} for m, per_wd in ests.items()}
    wds = sorted({wd for per_wd in ests.values() for wd in per_wd})
    if len(ests) > 1:
        claims[ORDER] = combine([status(ordered({m: ok[m][wd] for m in ests}, crit["order_margin"]))
                                 for wd in wds])
    if "ungrokking" in ests and "sweep" in ests:
        claims[HYSTERESIS] = combine([status(inside(ratio(ok["ungrokking"][wd]["est"], ok["sweep"][wd]["est"]),
                                                    hi=crit["hysteresis_ratio_max"]))
                                      for wd in wds])
    if len(wds) > 1:
        claims[WD] = combine([status(agree([e["est"] for e in per_wd.values()], crit["wd_rel_tol"]))
                              for per_wd in ok.values()])
    return claims


def run(cfg: Config, run_dir) -> Verdict:
    p, crit = protocol_fields(cfg.params, DEFAULTS, "params"), protocol_fields(cfg.criteria, CRITERIA, "criteria")
    methods, wds = methods_of(p), weight_decays(cfg, p)
    run_dir = Path(run_dir)
    started = begin(cfg, run_dir)
    ests: dict[str, dict[float, dict]] = {}
    if "sweep" in methods:
        ests["sweep"] = {wd: by_sweep(cfg, p, wd, run_dir / LIVE) for wd in wds}
    if "ungrokking" in methods:
        ests["ungrokking"] = by_ungrokking(cfg, p, wds, run_dir / LIVE)
    if "efficiency" in methods:
        ests["efficiency"] = {wd: by_efficiency(cfg, p, wd, run_dir / LIVE) for wd in wds}
    measured, status_ = summarise(cfg, ests, wds, crit)
    verdict = Verdict(NAME, CLAIM, status_, measured, crit, seeds=list(cfg.seeds))
    figure(cfg, ests, wds, run_dir)
    histories = {k: h for per_wd in ests.values() for e in per_wd.values() for k, h in e["histories"].items()}
    networks = {k: f for per_wd in ests.values() for e in per_wd.values() for k, f in e.get("networks", {}).items()}
    return finish(cfg, run_dir, verdict, histories, started, networks)


def summarise(cfg: Config, ests: dict, wds: list[float], crit: dict) -> tuple[dict, str]:
    n_all, wd0 = n_inputs(cfg.task), wds[0]
    keep = ("D_crit", "ci", "seed_range", "n_seeds", "n_boot", "n_distinct_resamples", "frac", "status",
            "mem_exponent", "gen_exponent", "extrapolated", "settled", "points", "note")
    claims = judge(ests, crit)
    measured = {"p": cfg.task.p, "arch": cfg.model.arch, "n_pairs": n_all, "weight_decays": wds,
                "claims": claims_from(claims), "methods": {}}
    for method, per_wd in ests.items():
        rows = {}
        for wd, e in per_wd.items():
            rows[str(wd)] = {**{k: e[k] for k in keep if k in e}, "status": method_status(method, e, crit),
                             "estimate": e["est"].to_dict()}
            if method == "efficiency":
                rows[str(wd)]["efficiency_status"] = e.get("status")
        measured["methods"][method] = rows
        measured[f"D_crit_{method}"] = per_wd[wd0]["D_crit"]
        measured[f"D_crit_{method}_ci"] = per_wd[wd0]["ci"]
        measured[f"D_crit_{method}_seed_range"] = per_wd[wd0]["seed_range"]
        measured[f"D_crit_{method}_frac"] = per_wd[wd0]["frac"]
        if len(wds) > 1:
            vals = [e["D_crit"] for e in per_wd.values()]
            measured[f"{method}_weight_decays_agree"] = agree([e["est"] for e in per_wd.values()], crit["wd_rel_tol"])
            measured[f"{method}_weight_decay_ratio"] = max(vals) / min(vals) if all(vals) else None
    first = {m: per_wd[wd0] for m, per_wd in ests.items()}
    if len(first) > 1:
        measured["ordering_holds"] = ordered(first, crit["order_margin"])
        measured["all_intervals_overlap"] = intervals_overlap([e["ci"] for e in first.values()])   # reported only
    if "ungrokking" in first and "sweep" in first:
        r = ratio(first["ungrokking"]["est"], first["sweep"]["est"])
        measured["hysteresis_ratio"] = r.value
        measured["hysteresis_ratio_est"] = r.to_dict()
    measured["sensitivity"] = sensitivity(lambda c: judge(ests, c), crit, CRIT_CLAIM)
    for m in ("efficiency", "sweep", "ungrokking"):   # the headline D_crit (read by `semigrokking`)
        if m in first and first[m]["D_crit"]:
            measured["D_crit"], measured["D_crit_method"] = first[m]["D_crit"], m
            break
    return measured, combine(list(claims.values()))


def figure(cfg: Config, ests: dict, wds: list[float], run_dir) -> None:
    fig, ax = plots.subplots(1, 1, figsize=(8, 4.5))
    a = ax[0, 0]
    styles = {"sweep": ("o", "-"), "ungrokking": ("s", "--")}
    all_D = [d for per_wd in ests.values() for e in per_wd.values() for d, _ in e["points"]] or [1, 2]
    grid = np.geomspace(min(all_D), max(all_D), 200)
    for i, wd in enumerate(wds):
        colour = f"C{i}"
        for method, per_wd in ests.items():
            e = per_wd[wd]
            label = f"{method}, wd {wd:g}" if len(wds) > 1 else method
            if e["D_crit"]:
                ci, rng = e["ci"], e.get("seed_range")
                label += f": {e['D_crit']:.0f}" + (f" [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else
                                                   f" (seed range {rng[0]:.0f}..{rng[1]:.0f})" if rng else "")
            if method in styles:
                marker, ls = styles[method]
                if e["points"]:
                    D, acc = zip(*e["points"])
                    a.scatter(D, acc, color=colour, marker=marker, s=14, alpha=0.6)
                if e["fit"] is not None and e["fit"].D_mid:
                    a.plot(grid, e["fit"].curve(grid), color=colour, ls=ls, lw=1.2)
                a.plot([], [], color=colour, ls=ls, marker=marker, label=label)
            else:
                a.plot([], [], color=colour, ls=":", label=label)
            if e["D_crit"]:
                a.axvline(e["D_crit"], color=colour, ls={"sweep": "-", "ungrokking": "--"}.get(method, ":"), lw=0.9)
                if e["ci"]:
                    a.axvspan(*e["ci"], color=colour, alpha=0.07)
    a.set(xscale="log", xlabel=f"D: training pairs (of {n_inputs(cfg.task)})", ylabel="final test accuracy",
          title=f"D_crit: {cfg.model.arch}, p={cfg.task.p} (circles: from scratch, squares: ungrokking; "
                f"vertical lines: estimates, dotted: efficiency crossing)")
    a.title.set_fontsize(8)
    a.legend(fontsize=7, loc="center left")
    plots.save(fig, run_dir, cfg)
