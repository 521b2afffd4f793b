"""D_crit: the training-set size at which C_mem and C_gen are equally efficient, estimated by three
independent methods side by side (Varma et al. 2023, Sec. 4-5).

  sweep       from scratch at sizes D x seeds for a fixed budget (params.sweep: sizes, steps); a
              logistic fit of final test accuracy against ln D; D_crit is its midpoint, with a
              bootstrap interval over seeds (circuits/fit.py);
  ungrokking  a grokked network trained on nested subsets of sizes D' (protocols/ungrokking.py,
              params.ungrokking; its grok_seeds pick the grokked networks, default all seeds);
              the same fit;
  efficiency  where the C_mem norm-at-fixed-logit line crosses the flat C_gen norm
              (protocols/efficiency.py, params.efficiency), with its bootstrap interval;
  all         the three, whether their intervals overlap, and the hysteresis ratio ungrokking / sweep
              (the paper: the ungrokking threshold is about half the from-scratch one).

With several weight decays (params.weight_decays, `circuits dcrit --wd 0.3,1,3`) every method
estimates D_crit per weight decay, with step budgets scaled by (config weight decay / wd) so that each
gets the same decay budget lr * wd * steps.

Status: a method *holds* when it produced an estimate with an interval (a sweep or ungrokking fit
whose accuracy rises by at least criteria.min_rise across the sizes; an efficiency run whose own
criteria hold). With several weight decays, each method's estimates must also agree within their
intervals (the theory: D_crit does not depend on weight decay). With all three methods, the order
the theory predicts must hold within the intervals: ungrokking <= efficiency <= sweep (ungrokking
happens at D << D_crit; from scratch, grokking needs D > D_crit). Agreement of all three intervals
and the hysteresis ratio are measured and reported, not judged.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from circuits import plots
from circuits.config import Config, protocol_fields
from circuits.detect import Verdict, combine
from circuits.errors import CircuitsError
from circuits.experiment import begin, finish
from circuits.fit import fit_transition, intervals_overlap
from circuits.tasks import sizes_from
from protocols import efficiency, semigrokking, ungrokking

NAME = "dcrit"
CLAIM = "D_crit, where C_mem and C_gen are equally efficient: ungrokking <= efficiency <= from-scratch, for any weight decay"
METHODS = ("sweep", "ungrokking", "efficiency")
DEFAULTS = {"method": "all", "weight_decays": None, "workers": None,
            "sweep": {"sizes": [0.2, 0.25, 0.3, 0.35, 0.4, 0.5], "steps": 4000, "eval_every": 50},
            "ungrokking": {}, "efficiency": {}}
CRITERIA = {"min_rise": 0.5}


def methods_of(p: dict) -> list[str]:
    m = p["method"]
    if m == "all":
        return list(METHODS)
    if m not in METHODS:
        raise CircuitsError(f"--method must be sweep, ungrokking, efficiency or all, got {m!r}")
    return [m]


def weight_decays(cfg: Config, p: dict) -> list[float]:
    wds = p["weight_decays"] or [cfg.optim.weight_decay]
    wds = [float(w) for w in (wds if isinstance(wds, (list, tuple)) else [wds])]
    if any(not w > 0 for w in wds):
        raise CircuitsError(f"--wd values must be > 0, got {wds}")
    return wds


def scaled(steps: int, cfg: Config, wd: float) -> int:
    """The same decay budget lr * wd * steps as `steps` at the config's weight decay."""
    return max(1, int(round(steps * cfg.optim.weight_decay / wd)))


def estimate(fit, n_all: int) -> dict:
    return {"D_crit": fit.D_mid, "ci": fit.ci, "frac": fit.D_mid / n_all if fit.D_mid else None,
            "lo": fit.lo, "hi": fit.hi}


def by_sweep(cfg: Config, p: dict, wd: float) -> dict:
    """From scratch at every size x seed for the budget; the fit of final test accuracy against D."""
    sp = {**DEFAULTS["sweep"], **p["sweep"]}
    sub = replace(cfg, protocol="semigrokking", params={}, criteria={},
                  optim=replace(cfg.optim, weight_decay=wd),
                  train=replace(cfg.train, steps=scaled(sp["steps"], cfg, wd), eval_every=sp["eval_every"]))
    jobs = semigrokking.scratch_jobs(sub, sizes_from(sp["sizes"], cfg.task.p ** 2))
    hists = semigrokking.run_scratch(jobs, p["workers"], f"dcrit sweep {cfg.model.arch} wd {wd:g}")
    D, acc = [j.size for j in jobs], [h[-1].get("test_acc", 0.0) for h in hists]
    fit = fit_transition(D, acc, [j.seed for j in jobs])
    return {**estimate(fit, cfg.task.p ** 2), "fit": fit, "points": list(zip(D, acc)),
            "histories": {f"sweep-wd{wd:g}-D{j.size}-seed{j.seed}": h for j, h in zip(jobs, hists)}}


def by_ungrokking(cfg: Config, p: dict, wds: list[float]) -> dict[float, dict]:
    """The ungrokking protocol's measurement (one grokked network per seed, every wd on its subsets)."""
    params = {**p["ungrokking"], "weight_decays": wds, "equal_decay_budget": True}
    grok_seeds = params.pop("grok_seeds", None) or cfg.seeds      # the grokked networks (subset seeds vary too)
    sub = replace(cfg, protocol="ungrokking", params=params, criteria={}, seeds=list(grok_seeds))
    m = ungrokking.measure(sub)
    out = {}
    for wd in wds:
        s = m.per_wd.get(wd)
        if s is None:
            out[wd] = {"D_crit": None, "ci": None, "frac": None, "fit": None, "points": [], "histories": {},
                       "note": "no network grokked within the pretraining budget"}
            continue
        pts = [(j.size, h[-1]["test_acc"]) for j, h in zip(m.jobs, m.hists) if j.weight_decay == wd]
        out[wd] = {**estimate(s["fit"], cfg.task.p ** 2), "fit": s["fit"], "points": pts, "histories": {}}
    out[wds[0]]["histories"] = m.histories
    return out


def by_efficiency(cfg: Config, p: dict, wd: float) -> dict:
    ep = protocol_fields(p["efficiency"], efficiency.DEFAULTS, "params.efficiency")
    steps, gen_steps = ep["steps"], ep["gen_steps"] or ep["steps"]
    sub = replace(cfg, protocol="efficiency", criteria={}, optim=replace(cfg.optim, weight_decay=wd),
                  params={**p["efficiency"], "steps": scaled(steps, cfg, wd), "gen_steps": scaled(gen_steps, cfg, wd)})
    results = efficiency.measure(sub, f"dcrit efficiency wd {wd:g}")
    crit = protocol_fields({}, efficiency.CRITERIA, "criteria")
    status, m = efficiency.analyse(results, crit, ep["n_boot"], cfg.task.p)
    return {"D_crit": m.get("D_crit"), "ci": m.get("D_crit_ci"), "frac": m.get("D_crit_frac"), "status": status,
            "mem_rank_corr": m.get("mem_rank_corr"), "gen_rel_change": m.get("gen_rel_change"),
            "extrapolated": m.get("extrapolated"), "fit": None, "points": [], "histories": {}}


def method_status(method: str, est: dict, crit: dict) -> str:
    if est["D_crit"] is None or est["ci"] is None:
        return "inconclusive"
    if method == "efficiency":
        return est["status"]
    return "holds" if est["hi"] - est["lo"] >= crit["min_rise"] else "fails"


def ordered(ests: dict[str, dict]) -> bool | None:
    """ungrokking <= efficiency <= sweep, within the intervals (None: an estimate is missing)."""
    cis = [ests[m]["ci"] for m in ("ungrokking", "efficiency", "sweep")]
    if any(c is None for c in cis):
        return None
    (u_lo, _), (e_lo, e_hi), (_, s_hi) = cis
    return u_lo <= e_hi and e_lo <= s_hi


def run(cfg: Config, run_dir) -> Verdict:
    p, crit = protocol_fields(cfg.params, DEFAULTS, "params"), protocol_fields(cfg.criteria, CRITERIA, "criteria")
    methods, wds = methods_of(p), weight_decays(cfg, p)
    run_dir = Path(run_dir)
    started = begin(cfg, run_dir)
    ests: dict[str, dict[float, dict]] = {}
    if "sweep" in methods:
        ests["sweep"] = {wd: by_sweep(cfg, p, wd) for wd in wds}
    if "ungrokking" in methods:
        ests["ungrokking"] = by_ungrokking(cfg, p, wds)
    if "efficiency" in methods:
        ests["efficiency"] = {wd: by_efficiency(cfg, p, wd) for wd in wds}
    measured, status = summarise(cfg, ests, wds, crit)
    verdict = Verdict(NAME, CLAIM, status, measured, crit, seeds=list(cfg.seeds))
    figure(cfg, ests, wds, run_dir)
    histories = {k: h for per_wd in ests.values() for e in per_wd.values() for k, h in e["histories"].items()}
    return finish(cfg, run_dir, verdict, histories, started)


def summarise(cfg: Config, ests: dict, wds: list[float], crit: dict) -> tuple[dict, str]:
    n_all, wd0 = cfg.task.p ** 2, wds[0]
    keep = ("D_crit", "ci", "frac", "status", "mem_rank_corr", "gen_rel_change", "extrapolated", "points", "note")
    measured = {"p": cfg.task.p, "arch": cfg.model.arch, "n_pairs": n_all, "weight_decays": wds, "methods": {}}
    statuses = []
    for method, per_wd in ests.items():
        rows = {}
        for wd, e in per_wd.items():
            s = method_status(method, e, crit)
            statuses.append(s)
            rows[str(wd)] = {**{k: e[k] for k in keep if k in e}, "status": s}
        measured["methods"][method] = rows
        measured[f"D_crit_{method}"] = per_wd[wd0]["D_crit"]
        measured[f"D_crit_{method}_ci"] = per_wd[wd0]["ci"]
        measured[f"D_crit_{method}_frac"] = per_wd[wd0]["frac"]
        if len(wds) > 1:
            agree = intervals_overlap([e["ci"] for e in per_wd.values()])
            measured[f"{method}_weight_decays_agree"] = agree
            statuses.append({True: "holds", False: "fails", None: "inconclusive"}[agree])
    first = {m: per_wd[wd0] for m, per_wd in ests.items()}
    if len(first) == 3:
        order = ordered(first)
        measured["ordering_holds"] = order
        statuses.append({True: "holds", False: "fails", None: "inconclusive"}[order])
        measured["all_intervals_overlap"] = intervals_overlap([e["ci"] for e in first.values()])
        u, s = first["ungrokking"]["D_crit"], first["sweep"]["D_crit"]
        measured["hysteresis_ratio"] = u / s if u and s else None
    for m in ("efficiency", "sweep", "ungrokking"):   # the headline D_crit (read by `semigrokking`)
        if m in first and first[m]["D_crit"]:
            measured["D_crit"], measured["D_crit_method"] = first[m]["D_crit"], m
            break
    return measured, combine(statuses)


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
                ci = e["ci"]
                label += f": {e['D_crit']:.0f}" + (f" [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else "")
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
    a.set(xscale="log", xlabel=f"D: training pairs (of {cfg.task.p ** 2})", ylabel="final test accuracy",
          title=f"D_crit: {cfg.model.arch}, p={cfg.task.p} (circles: from scratch, squares: ungrokking; "
                f"vertical lines: estimates, dotted: efficiency crossing)")
    a.title.set_fontsize(8)
    a.legend(fontsize=7, loc="center left")
    plots.save(fig, run_dir)
