"""Ungrokking: a network that has grokked, trained further on a subset D' << D_crit of its training
set, loses its test accuracy while keeping train accuracy 1; the transition in final test accuracy
against D' is sharp and does not depend on the weight decay (Varma et al. 2023, Fig. 7-8).

1. Grok a network on a large training split (cached in circuits.cache: reused by later runs).
2. For each weight decay, subset size D' and subset seed: a copy of it trains on the nested subset
   of size D' with a fresh AdamW for at most `params.steps` steps (x optim.weight_decay / wd with
   `params.equal_decay_budget`: the same decay budget lr * wd * steps for every wd). A run *settles*
   when its test accuracy moved at most params.settle_acc_tol over the last params.settle_decay_times
   decay times 1 / (lr * wd), or (with params.end_states = [lo, hi]) when its test accuracy has stayed
   below lo (ungrokked) or at or above hi (kept) for params.end_decay_times decay times; with
   params.stop_when_settled it stops there, else it runs to the step cap. Every run records whether
   it settled or hit the cap. With params.coarse_seeds = k, sizes are chosen adaptively: a coarse
   pass runs the first k subset seeds at every size, the other seeds then run only where the coarse
   runs are in transition and at the nearest size on either side (`bracket`).
3. Final test accuracy (on the original test split) against D': a logistic fit in log D' per weight
   decay, its midpoint (the ungrokking estimate of D_crit, shared with `circuits dcrit --method
   ungrokking`) and width, each with a 95% bootstrap interval over (network, subset) seeds when there
   are at least 5 of them (circuits/fit.py), else a seed range.

Claims judged (each in measured.claims; the status combines them), for every weight decay:
  loses   the smallest D' ends with mean test accuracy < criteria.smallest_test_acc_max while
          train accuracy stays >= criteria.smallest_train_acc_min (every run);
  keeps   the largest D' keeps mean test accuracy >= criteria.largest_test_acc_min;
  midpoint  the fit finds a transition whose midpoint lies inside the sizes measured;
  sharp   its width in ln D' is at most criteria.width_max (with an interval: judged on it);
and with several weight decays:
  wd      the midpoints agree within a ratio 1 + criteria.wd_rel_tol: an equivalence test on the
          interval of max/min of the midpoints, bootstrapped over the seeds the weight decays share
          (a paired design), with >= 5 seeds; with fewer, circuits.fit.agree on the point estimates.
measured.sensitivity re-judges each thresholded claim at 0.5x-2x its threshold.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from circuits import plots
from circuits.cache import entry_path, steps_left, trained
from circuits.config import Config, protocol_fields, to_dict
from circuits.detect import Verdict, claims_from, combine, first_step, held, settle_window, settled
from circuits.experiment import LIVE, begin, finish
from circuits.fit import Estimate, agree, fit_transition, inside, intervals_overlap, over_seeds, sensitivity, status
from circuits.store import cache_dir, config_hash
from circuits.tasks import n_inputs
from circuits.validate import check_at_least, check_seed_list, check_sizes, need
from protocols.subset_runs import Job, bracket, known_caps, network_of, planned, record_path, recorded, run_jobs, steps_to_train, settle_params, subset_size, ungrok  # noqa: F401 (Job, bracket, record_path, ungrok: used via this module)

NAME = "ungrokking"
CLAIM = ("a grokked network trained on D' << D_crit loses test accuracy while train accuracy stays 1; "
         "the transition against D' is sharp and does not depend on weight decay")
DEFAULTS = {"sizes": [0.05, 0.1, 0.2, 0.3], "subset_seeds": [0, 1], "weight_decays": None, "steps": 3000,
            "eval_every": 50, "equal_decay_budget": True, "workers": None, "n_boot": 200,
            "settle_decay_times": 3.0, "settle_acc_tol": 0.01, "stop_when_settled": True,
            "end_states": None, "end_decay_times": 1.0, "coarse_seeds": 0}
PARAMS_DOC = {
    "sizes": "subset sizes D': fractions of all inputs (p^2 pairs for x+y; <= 1) or counts, at most the training split",
    "subset_seeds": "seeds of the nested subsets (5 or more give intervals)",
    "weight_decays": "weight decays the subset runs use (None: the config's)",
    "steps": "step cap of a subset run (at the first weight decay; see equal_decay_budget)",
    "eval_every": "steps between evaluations of a subset run",
    "equal_decay_budget": "give every weight decay the same lr * wd * steps (true) or the same step cap (false)",
    "workers": "worker processes (None: one per core)",
    "n_boot": "bootstrap resamples of the seeds for the intervals",
    "settle_decay_times": "settle window in decay times 1 / (lr wd)",
    "settle_acc_tol": "a run is settled when its test accuracy moved at most this over the window",
    "stop_when_settled": "stop a run once settled (else it runs to its cap); every run records which",
    "end_states": "[lo, hi]: a run also settles once its test accuracy stayed < lo or >= hi (hi null: no such state) for end_decay_times (None: off)",
    "end_decay_times": "how long an end state must hold, in decay times 1 / (lr wd)",
    "coarse_seeds": "adaptive sizes: the first k subset seeds run at every size, the rest only near the transition (0: all everywhere)",
}
CRITERIA = {"pretrain_test_acc": 0.99, "smallest_test_acc_max": 0.1, "smallest_train_acc_min": 0.99,
            "largest_test_acc_min": 0.9, "width_max": 0.3, "wd_rel_tol": 0.15}

LOSES = "at the smallest D' test accuracy is lost while train accuracy stays 1"
KEEPS = "at the largest D' test accuracy is kept"
MIDPOINT = "final test accuracy against D' has a transition with its midpoint inside the sizes measured"
SHARP = "the transition is sharp (its width in ln D' is at most criteria.width_max)"
WD = "the transition's midpoint does not depend on weight decay (within criteria.wd_rel_tol)"
CRIT_CLAIM = {"smallest_test_acc_max": LOSES, "smallest_train_acc_min": LOSES, "largest_test_acc_min": KEEPS,
              "width_max": SHARP, "wd_rel_tol": WD}


def params(cfg: Config) -> dict:
    p = protocol_fields(cfg.params, DEFAULTS, "params")
    p["weight_decays"] = p["weight_decays"] or [cfg.optim.weight_decay]
    return p


def validate(cfg: Config) -> None:
    """Its params' ranges, before anything trains (circuits.validate.validate_run): one line each."""
    need(cfg.params.get("weight_decays", None) != [], "params.weight_decays must not be empty (null: the config's optim.weight_decay)")
    p, n_all = params(cfg), n_inputs(cfg.task)
    n_train = int(cfg.task.frac * n_all)
    check_sizes(p["sizes"], "params.sizes", n_all, n_train, f"the grokked network's training split, task.frac {cfg.task.frac:g}")
    check_seed_list(p["subset_seeds"], "params.subset_seeds")
    check_at_least(p["weight_decays"], "params.weight_decays", 0, strict=True)
    need(len(set(p["weight_decays"])) == len(p["weight_decays"]), f"params.weight_decays must not repeat, got {p['weight_decays']}")
    for key in ("steps", "eval_every"):
        check_at_least(p[key], f"params.{key}", 1)
    for key in ("settle_decay_times", "settle_acc_tol", "end_decay_times"):
        check_at_least(p[key], f"params.{key}", 0, strict=True)
    k = p["coarse_seeds"] or 0
    need(0 <= k <= len(p["subset_seeds"]), f"params.coarse_seeds must be in [0, {len(p['subset_seeds'])}] "
                                            f"(the number of subset seeds), got {k}")
    ends = p["end_states"]
    need(ends is None or (len(ends) == 2 and all(e is None or 0 <= e <= 1 for e in ends)),
         f"params.end_states must be [lo, hi] with each a test accuracy in [0, 1] or null, got {ends!r}")


def grokked_rule(test_acc: float):
    """(stop rule, cache name) of a network trained until it has grokked: every protocol that needs a
    grokked network (ungrokking, dcrit, mixture) asks with these, so they share one cache entry."""
    return (lambda row: row["train_acc"] >= 0.99 and row.get("test_acc", 0.0) >= test_acc), f"grokked-{test_acc}"


def jobs_for(cfg: Config, seed: int, model_path, n_train: int) -> list[Job]:
    """Every (weight decay, D', subset seed) run of the grokked network at model_path. A job's
    checkpoint sits in the trained-circuit cache under a hash of all that decides its result, so
    another protocol asking for the same run (`circuits dcrit --method ungrokking`) reads it back."""
    p = params(cfg)
    sizes = sorted({subset_size(x, n_inputs(cfg.task), n_train) for x in p["sizes"]})
    wd0 = cfg.optim.weight_decay or p["weight_decays"][0]
    settle = settle_params(p)
    out = []
    for wd in p["weight_decays"]:
        equal = int(round(p["steps"] * wd0 / wd)) if wd > 0 else p["steps"]
        steps = equal if p["equal_decay_budget"] else p["steps"]
        for size in sizes:
            for s in p["subset_seeds"]:
                job = Job(cfg, seed, str(model_path), size, s, wd, steps, p["eval_every"], "", settle)
                job.checkpoint = _checkpoint(job, steps)
                job.caps_index = str(cache_dir() / "ungrok" / "caps" / f"{config_hash(_run_key(job))}.json")
                # the same run under the other convention's cap, or any cap it finished under in this
                # cache (read where it decides this one: subset_runs.same_run)
                caps = {equal, p["steps"], *known_caps(job)}
                job.other_caps = tuple((c, _checkpoint(job, c)) for c in sorted(caps) if c != steps)
                out.append(job)
    return out


def _run_key(job: Job) -> dict:
    """All that decides a subset run's history but its step cap."""
    key = {"grokked": Path(job.model_path).parent.name, "optim": to_dict(job.cfg)["optim"],
           "job": job.name, "eval_every": job.eval_every}
    if job.settle:
        key["settle"] = job.settle
    return key


def _checkpoint(job: Job, steps: int) -> str:
    """The cache path of `job` run with step cap `steps`."""
    return str(cache_dir() / "ungrok" / config_hash({**_run_key(job), "steps": steps}) / "checkpoint.pt")


def run_rows(jobs: list[Job], hists: list[list[dict]], p: dict, lr: float) -> list[dict]:
    """One row per retrained network: its end state and whether it settled or hit the step cap."""
    rows = []
    for j, h in zip(jobs, hists):
        window = settle_window(lr, j.weight_decay, p["settle_decay_times"])
        end = p.get("end_states")
        at_end = bool(end) and held(h, settle_window(lr, j.weight_decay, p["end_decay_times"]), *end)
        rows.append({"name": j.name, "wd": j.weight_decay, "D": j.size, "seed": f"{j.seed}-{j.subset_seed}",
                     "test_acc": h[-1]["test_acc"], "train_acc": h[-1]["train_acc"], "steps": h[-1]["step"],
                     "step_cap": j.steps, "settled": at_end or settled(h, window, p["settle_acc_tol"]),
                     "end_state": at_end,
                     "steps_to_lose_half": first_step(h, "test_acc", h[0]["test_acc"] / 2, after=0, below=True)})
    return rows


def summarise(rows: list[dict], p_mod: int, n_boot: int = 200) -> dict:
    """Per weight decay: per-size means, the transition fit (midpoint and width over seeds), settling.
    rows: run_rows() (or synthetic: wd, D, seed, test_acc, train_acc, optionally settled)."""
    out = {}
    for wd in sorted({r["wd"] for r in rows}):
        sel = [r for r in rows if r["wd"] == wd]
        fit = fit_transition([r["D"] for r in sel], [r["test_acc"] for r in sel], [r["seed"] for r in sel], n_boot)
        sizes = {}
        for size in sorted({r["D"] for r in sel}):
            at = [r for r in sel if r["D"] == size]
            sizes[size] = {"D": size, "frac_of_p2": size / p_mod**2,
                           "test_acc": statistics.mean(r["test_acc"] for r in at),
                           "train_acc_min": min(r["train_acc"] for r in at),
                           "test_acc_runs": [r["test_acc"] for r in at],
                           "settled": sum(bool(r.get("settled")) for r in at),
                           "steps_to_lose_half": [r.get("steps_to_lose_half") for r in at]}
        unsettled = [r.get("name", f"D{r['D']}-{r['seed']}") for r in sel if r.get("settled") is False]
        out[wd] = {"sizes": sizes, "D_mid": fit.D_mid, "D_mid_ci": fit.ci, "D_mid_seed_range": fit.seed_range,
                   "D_mid_frac": fit.D_mid / p_mod**2 if fit.D_mid else None, "mid": fit.mid, "width": fit.width_est,
                   "n_runs": len(sel), "n_settled": sum(bool(r.get("settled")) for r in sel),
                   "hit_step_cap": unsettled, "fit": fit}
    return out


def wd_ratio(rows: list[dict], n_boot: int = 200) -> Estimate:
    """max / min of the per-weight-decay midpoints, over the seeds the weight decays share: each
    resample picks the same seeds at every weight decay (a paired bootstrap; an interval from >= 5)."""
    wds = sorted({r["wd"] for r in rows})

    def stat(rs):
        mids = []
        for wd in wds:
            sel = [r for r in rs if r["wd"] == wd]
            mids.append(fit_transition([r["D"] for r in sel], [r["test_acc"] for r in sel]).D_mid if sel else None)
        return {"ratio": max(mids) / min(mids) if len(mids) > 1 and all(mids) else None}
    return over_seeds(rows, lambda r: r["seed"], stat, n_boot)["ratio"]


def judge(per_wd: dict, crit: dict, ratio: Estimate | None = None) -> dict[str, str]:
    """{claim: status} from summarise()'s per-weight-decay summaries and wd_ratio() (several wds)."""
    loses, keeps, mids, sharp = [], [], [], []
    for s in per_wd.values():
        sizes = s["sizes"]
        small, large = sizes[min(sizes)], sizes[max(sizes)]
        loses.append(status(small["test_acc"] < crit["smallest_test_acc_max"]
                            and small["train_acc_min"] >= crit["smallest_train_acc_min"]))
        keeps.append(status(large["test_acc"] >= crit["largest_test_acc_min"]))
        if s["mid"].value is None:
            mids.append("fails")                     # accuracy does not change with D': no transition
            sharp.append("inconclusive")
            continue
        mids.append(status(inside(s["mid"], min(sizes), max(sizes))))
        sharp.append(status(inside(s["width"], hi=crit["width_max"])))
    claims = {LOSES: combine(loses), KEEPS: combine(keeps), MIDPOINT: combine(mids), SHARP: combine(sharp)}
    if len(per_wd) > 1:
        mid_est = [s["mid"] for s in per_wd.values()]
        if any(m.value is None for m in mid_est):
            claims[WD] = "inconclusive"
        elif ratio is not None and ratio.ci is not None:
            claims[WD] = status(inside(ratio, hi=1 + crit["wd_rel_tol"]))
        else:
            claims[WD] = status(agree(mid_est, crit["wd_rel_tol"]))
    return claims


def analyse(per_wd: dict, crit: dict, ratio: Estimate | None = None) -> tuple[str, dict]:
    """The verdict's status and its judged numbers: claims, sensitivity, the midpoints' ratio."""
    claims = judge(per_wd, crit, ratio)
    m = {"claims": claims_from(claims),
         "sensitivity": sensitivity(lambda c: judge(per_wd, c, ratio), crit, CRIT_CLAIM,
                                    complement=("smallest_train_acc_min", "largest_test_acc_min"))}
    mids = [s["mid"].value for s in per_wd.values() if s["mid"].value]
    if len(per_wd) > 1 and len(mids) == len(per_wd):
        m["weight_decay_midpoint_ratio"] = max(mids) / min(mids)
        if ratio is not None:
            m["weight_decay_midpoint_ratio_est"] = ratio.to_dict()
        m["weight_decay_intervals_overlap"] = intervals_overlap([s["mid"].ci for s in per_wd.values()])  # reported only
    return combine(list(claims.values())), m


@dataclass
class Measured:
    grokked: dict                  # per pretraining seed: steps, test_acc, n_train, diverged
    jobs: list[Job]                # empty when no network grokked
    hists: list[list[dict]]
    per_wd: dict                   # summarise(): per weight decay, sizes and the transition fit
    histories: dict                # every history by name, for metrics.csv
    rows: list[dict] | None = None  # run_rows(): one per retrained network
    wd_ratio: Estimate | None = None  # wd_ratio(): max / min of the midpoints (several weight decays)
    networks: dict = field(default_factory=dict)   # name (as in histories) -> its file in the cache
    adaptive: dict | None = None   # with params.coarse_seeds: the coarse seeds, the sizes near the transition


def measure(cfg: Config, live_dir: Path | None = None) -> Measured:
    """Grok (or load from the cache) each seed's network, then train it on every nested subset (the
    ungrokking estimate of D_crit: shared with `circuits dcrit --method ungrokking`). With live_dir,
    every network trained here appends its evaluation rows to live_dir/NAME.csv as they come."""
    crit, p = protocol_fields(cfg.criteria, CRITERIA, "criteria"), params(cfg)
    histories, jobs, grokked, networks = {}, [], {}, {}
    stop, name = grokked_rule(crit["pretrain_test_acc"])
    for seed in cfg.seeds:
        t, path = trained(cfg, seed, stop=stop, stop_name=name, label=f"grok {cfg.model.arch} seed {seed} (cached)",
                          live=live_dir and live_dir / f"seed{seed}-grok.csv")
        histories[f"seed{seed}-grok"] = t.result.history
        networks[f"seed{seed}-grok"] = path
        grokked[seed] = {"steps": t.result.step, "test_acc": t.result.history[-1].get("test_acc"),
                         "n_train": len(t.data.train_idx), "diverged": t.result.status == "diverged"}
        if t.result.history[-1].get("test_acc", 0.0) >= crit["pretrain_test_acc"]:
            jobs += jobs_for(cfg, seed, path, len(t.data.train_idx))
    if not jobs:
        return Measured(grokked, [], [], {}, histories, networks=networks)
    for job in jobs if live_dir else []:
        job.live = str(live_dir / f"{job.name}.csv")
    jobs, hists, adaptive = run_jobs(jobs, cfg, p, crit)
    histories.update({j.name: h for j, h in zip(jobs, hists)})
    networks.update({j.name: path for j in jobs if (path := network_of(j))})
    rows = run_rows(jobs, hists, p, cfg.optim.lr)
    ratio = wd_ratio(rows, p["n_boot"]) if len(p["weight_decays"]) > 1 else None
    return Measured(grokked, jobs, hists, summarise(rows, cfg.task.p, p["n_boot"]), histories, rows, ratio,
                    networks, adaptive)


def run(cfg: Config, run_dir) -> Verdict:
    crit, p = protocol_fields(cfg.criteria, CRITERIA, "criteria"), params(cfg)
    started = begin(cfg, run_dir)
    m = measure(cfg, Path(run_dir) / LIVE)
    if not m.jobs:
        status_ = "diverged" if any(g["diverged"] for g in m.grokked.values()) else "inconclusive"
        verdict = Verdict(NAME, CLAIM, status_, {"pretrain": m.grokked, "note": "no network grokked within budget"},
                          crit, seeds=list(cfg.seeds))
        return finish(cfg, run_dir, verdict, m.histories, started, m.networks)
    per_wd, wd0 = m.per_wd, p["weight_decays"][0]
    status_, judged = analyse(per_wd, crit, m.wd_ratio)
    measured = {
        "pretrain": m.grokked,
        "D_crit_ungrokking": per_wd[wd0]["D_mid"],
        "D_crit_ungrokking_ci": per_wd[wd0]["D_mid_ci"],
        "D_crit_ungrokking_frac": per_wd[wd0]["D_mid_frac"],
        "n_seeds": per_wd[wd0]["mid"].n_seeds,
        **judged,
        "per_weight_decay": {str(wd): {**{k: v for k, v in s.items() if k not in ("fit", "mid", "width")},
                                       "midpoint": s["mid"].to_dict(), "width_lnD": s["width"].to_dict()}
                             for wd, s in per_wd.items()},
        "runs": [{k: r[k] for k in ("name", "test_acc", "train_acc", "steps", "step_cap", "settled", "end_state")}
                 for r in m.rows],
    }
    if m.adaptive:
        measured["adaptive"] = m.adaptive
    verdict = Verdict(NAME, CLAIM, status_, measured, crit, seeds=list(cfg.seeds))
    figure(cfg, m.jobs, m.hists, per_wd, run_dir)
    return finish(cfg, run_dir, verdict, m.histories, started, m.networks)


def figure(cfg: Config, jobs: list[Job], hists: list[list[dict]], per_wd: dict, run_dir) -> None:
    fig, ax = plots.subplots(1, 2, figsize=(11, 4))
    curves, final = ax[0, 0], ax[0, 1]
    wd0 = jobs[0].weight_decay
    sizes = sorted({j.size for j in jobs})
    cmap = plots.plt.get_cmap("viridis")
    colour = {s: cmap(i / max(len(sizes) - 1, 1)) for i, s in enumerate(sizes)}
    for j, h in zip(jobs, hists):
        if j.weight_decay == wd0:
            curves.plot([r["step"] + 1 for r in h], [r["test_acc"] for r in h], color=colour[j.size], lw=1,
                        label=f"D'={j.size}" if j.subset_seed == jobs[0].subset_seed else None)
    curves.set(xscale="log", xlabel="step on the subset (+1)", ylabel="test accuracy", title=f"test accuracy, wd {wd0:g}")
    curves.legend(fontsize=7, ncol=2)
    grid = np.geomspace(sizes[0], sizes[-1], 200)
    for i, (wd, s) in enumerate(per_wd.items()):
        c = f"C{i}"
        D = [j.size for j in jobs if j.weight_decay == wd]
        acc = [h[-1]["test_acc"] for j, h in zip(jobs, hists) if j.weight_decay == wd]
        final.scatter(D, acc, color=c, s=12, alpha=0.7)
        label = f"wd {wd:g}"
        if s["D_mid"]:
            final.plot(grid, s["fit"].curve(grid), color=c)
            final.axvline(s["D_mid"], color=c, ls="--", lw=0.8)
            ci, rng = s["D_mid_ci"], s["D_mid_seed_range"]
            label += f": D_mid {s['D_mid']:.0f}" + (f" [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else
                                                     f" (seed range {rng[0]:.0f}..{rng[1]:.0f})" if rng else "")
        final.plot([], [], color=c, label=label)
        train_min = [s["sizes"][d]["train_acc_min"] for d in sorted(s["sizes"])]
        final.plot(sorted(s["sizes"]), train_min, color=c, ls=":", lw=1)
    final.set(xscale="log", xlabel="D' (training pairs kept)", ylabel="final test accuracy (dotted: train, min)",
              title=f"ungrokking: {cfg.model.arch}, p={cfg.task.p}, grokked on {cfg.task.frac:g} of all pairs")
    final.legend(fontsize=7)
    plots.save(fig, run_dir, cfg)


def budget(cfg: Config) -> list[tuple[int, int, int]]:
    """The step budget at its caps of the work not done yet, for the run's time bound
    (circuits.estimate): grokking each seed (unless cached), then every subset run that no finished
    run decides (`recorded`) and the adaptive plan may still ask for (`planned`), spread over the
    worker processes."""
    p = params(cfg)
    n_train = max(1, int(cfg.task.frac * n_inputs(cfg.task)))
    workers = p["workers"] or os.cpu_count() or 1
    crit = protocol_fields(cfg.criteria, CRITERIA, "criteria")
    _, grok = grokked_rule(crit["pretrain_test_acc"])
    plan = [(n_train, left, 1) for seed in cfg.seeds if (left := steps_left(cfg, seed, grok))]
    jobs = [j for seed in cfg.seeds for j in jobs_for(cfg, seed, entry_path(cfg, seed, grok), n_train)]
    return plan + [(j.size, left, workers) for j in planned(jobs, p, crit) if (left := steps_to_train(j))]
