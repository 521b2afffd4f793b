"""Ungrokking: a network that has grokked, trained further on a subset D' << D_crit of its training
set, loses its test accuracy while keeping train accuracy 1 (Varma et al. 2023, Fig. 7-8).

1. Grok a network on a large training split (cached in circuits.cache: reused by later runs).
2. For each weight decay, subset size D' and subset seed: a copy of it trains on the nested subset
   of size D' with a fresh AdamW for `params.steps` steps (x optim.weight_decay / wd with
   `params.equal_decay_budget`: the same decay budget lr * wd * steps for every wd).
3. Final test accuracy (on the original test split) against D': a logistic fit; its midpoint is the
   ungrokking estimate of D_crit (shared with `circuits dcrit --method ungrokking`).

Holds when, for every weight decay, the smallest D' ends with mean test accuracy below
criteria.smallest_test_acc_max while its train accuracy stays >= criteria.smallest_train_acc_min,
and the largest D' keeps mean test accuracy >= criteria.largest_test_acc_min.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from circuits import plots
from circuits.cache import trained
from circuits.config import Config, protocol_fields, to_dict
from circuits.detect import Verdict, combine, first_step
from circuits.experiment import begin, build, finish, setup
from circuits.fit import fit_transition, intervals_overlap
from circuits.parallel import pmap
from circuits.progress import Bar
from circuits.store import cache_dir, config_hash, load_torch
from circuits.tasks import nested_subset, sizes_from
from circuits.train import Phase, train

NAME = "ungrokking"
CLAIM = "a grokked network trained on D' << D_crit loses test accuracy while train accuracy stays 1"
DEFAULTS = {"sizes": [0.05, 0.1, 0.2, 0.3], "subset_seeds": [0, 1], "weight_decays": None, "steps": 3000,
            "eval_every": 50, "equal_decay_budget": True, "workers": None}
CRITERIA = {"pretrain_test_acc": 0.99, "smallest_test_acc_max": 0.1, "smallest_train_acc_min": 0.99,
            "largest_test_acc_min": 0.9}


@dataclass
class Job:
    cfg: Config
    seed: int              # the grokked network's seed
    model_path: str        # its cache file
    size: int              # D'
    subset_seed: int
    weight_decay: float
    steps: int
    eval_every: int
    checkpoint: str

    @property
    def name(self) -> str:
        return f"seed{self.seed}-wd{self.weight_decay:g}-D{self.size}-s{self.subset_seed}"


def params(cfg: Config) -> dict:
    p = protocol_fields(cfg.params, DEFAULTS, "params")
    p["weight_decays"] = p["weight_decays"] or [cfg.optim.weight_decay]
    return p


def grokked_rule(test_acc: float):
    """(stop rule, cache name) of a network trained until it has grokked: every protocol that needs a
    grokked network (ungrokking, dcrit, mixture) asks with these, so they share one cache entry."""
    return (lambda row: row["train_acc"] >= 0.99 and row.get("test_acc", 0.0) >= test_acc), f"grokked-{test_acc}"


def subset_size(x: float, p: int, n_train: int) -> int:
    """A size given as a fraction of all p^2 pairs (x <= 1) or as a count; at most the training split."""
    return max(1, min(sizes_from([x], p * p)[0], n_train))


def ungrok(job: Job) -> list[dict]:
    """Continue the grokked network on its nested subset; the history of evaluations."""
    cfg = job.cfg
    device = setup(cfg)
    model, data = build(cfg, job.seed, device)
    model.load_state_dict(load_torch(job.model_path)["model"])
    sub = nested_subset(data.train_idx, job.size, job.subset_seed)
    tcfg = replace(cfg.train, steps=job.steps, eval_every=job.eval_every)
    res = train(model, data, cfg.optim, tcfg, phases=[Phase(job.steps, train_idx=sub, weight_decay=job.weight_decay,
                                                            fresh_optimizer=True)],
                checkpoint=job.checkpoint, seed=job.subset_seed)
    return res.history


def jobs_for(cfg: Config, seed: int, model_path, n_train: int) -> list[Job]:
    """Every (weight decay, D', subset seed) run of the grokked network at model_path. A job's
    checkpoint sits in the trained-circuit cache under a hash of all that decides its result, so
    another protocol asking for the same run (`circuits dcrit --method ungrokking`) reads it back."""
    p = params(cfg)
    sizes = sorted({subset_size(x, cfg.task.p, n_train) for x in p["sizes"]})
    wd0 = cfg.optim.weight_decay or p["weight_decays"][0]
    out = []
    for wd in p["weight_decays"]:
        steps = int(round(p["steps"] * wd0 / wd)) if p["equal_decay_budget"] and wd > 0 else p["steps"]
        for size in sizes:
            for s in p["subset_seeds"]:
                job = Job(cfg, seed, str(model_path), size, s, wd, steps, p["eval_every"], "")
                key = config_hash({"grokked": Path(model_path).parent.name, "optim": to_dict(cfg)["optim"],
                                   "job": job.name, "steps": steps, "eval_every": p["eval_every"]})
                job.checkpoint = str(cache_dir() / "ungrok" / key / "checkpoint.pt")
                out.append(job)
    return out


def summarise(jobs: list[Job], hists: list[list[dict]], p_mod: int) -> dict:
    """Per weight decay: per-size means, the transition fit, steps to lose half the test accuracy."""
    out = {}
    for wd in sorted({j.weight_decay for j in jobs}):
        pairs = [(j, h) for j, h in zip(jobs, hists) if j.weight_decay == wd]
        D = [j.size for j, _ in pairs]
        acc = [h[-1]["test_acc"] for _, h in pairs]
        fit = fit_transition(D, acc, [f"{j.seed}-{j.subset_seed}" for j, _ in pairs])
        sizes = {}
        for size in sorted(set(D)):
            rows = [(j, h) for j, h in pairs if j.size == size]
            half = [first_step(h, "test_acc", h[0]["test_acc"] / 2, after=0, below=True) for _, h in rows]
            sizes[size] = {"D": size, "frac_of_p2": size / p_mod**2,
                           "test_acc": statistics.mean(h[-1]["test_acc"] for _, h in rows),
                           "train_acc_min": min(h[-1]["train_acc"] for _, h in rows),
                           "test_acc_runs": [h[-1]["test_acc"] for _, h in rows],
                           "steps_to_lose_half": half}
        out[wd] = {"sizes": sizes, "D_mid": fit.D_mid, "D_mid_ci": fit.ci,
                   "D_mid_frac": fit.D_mid / p_mod**2 if fit.D_mid else None, "fit": fit}
    return out


def judge(per_wd: dict, crit: dict) -> str:
    statuses = []
    for s in per_wd.values():
        small, large = s["sizes"][min(s["sizes"])], s["sizes"][max(s["sizes"])]
        ok = (small["test_acc"] < crit["smallest_test_acc_max"] and small["train_acc_min"] >= crit["smallest_train_acc_min"]
              and large["test_acc"] >= crit["largest_test_acc_min"])
        statuses.append("holds" if ok else "fails")
    return combine(statuses)


@dataclass
class Measured:
    grokked: dict                  # per pretraining seed: steps, test_acc, n_train, diverged
    jobs: list[Job]                # empty when no network grokked
    hists: list[list[dict]]
    per_wd: dict                   # summarise(): per weight decay, sizes and the transition fit
    histories: dict                # every history by name, for metrics.csv


def measure(cfg: Config) -> Measured:
    """Grok (or load from the cache) each seed's network, then train it on every nested subset (the
    ungrokking estimate of D_crit: shared with `circuits dcrit --method ungrokking`)."""
    crit, p = protocol_fields(cfg.criteria, CRITERIA, "criteria"), params(cfg)
    histories, jobs, grokked = {}, [], {}
    stop, name = grokked_rule(crit["pretrain_test_acc"])
    for seed in cfg.seeds:
        t, path = trained(cfg, seed, stop=stop, stop_name=name,
                          label=f"grok {cfg.model.arch} seed {seed} (cached)")
        histories[f"seed{seed}-grok"] = t.result.history
        grokked[seed] = {"steps": t.result.step, "test_acc": t.result.history[-1].get("test_acc"),
                         "n_train": len(t.data.train_idx), "diverged": t.result.status == "diverged"}
        if t.result.history[-1].get("test_acc", 0.0) >= crit["pretrain_test_acc"]:
            jobs += jobs_for(cfg, seed, path, len(t.data.train_idx))
    if not jobs:
        return Measured(grokked, [], [], {}, histories)
    bar = Bar(f"ungrokking {cfg.model.arch}: {len(jobs)} runs on nested subsets")
    hists = pmap(ungrok, jobs, p["workers"], on_done=bar)
    bar.close()
    histories.update({j.name: h for j, h in zip(jobs, hists)})
    return Measured(grokked, jobs, hists, summarise(jobs, hists, cfg.task.p), histories)


def run(cfg: Config, run_dir) -> Verdict:
    crit, p = protocol_fields(cfg.criteria, CRITERIA, "criteria"), params(cfg)
    started = begin(cfg, run_dir)
    m = measure(cfg)
    if not m.jobs:
        status = "diverged" if any(g["diverged"] for g in m.grokked.values()) else "inconclusive"
        verdict = Verdict(NAME, CLAIM, status, {"pretrain": m.grokked, "note": "no network grokked within budget"},
                          crit, seeds=list(cfg.seeds))
        return finish(cfg, run_dir, verdict, m.histories, started)
    per_wd, wd0 = m.per_wd, p["weight_decays"][0]
    measured = {
        "pretrain": m.grokked,
        "D_crit_ungrokking": per_wd[wd0]["D_mid"],
        "D_crit_ungrokking_ci": per_wd[wd0]["D_mid_ci"],
        "D_crit_ungrokking_frac": per_wd[wd0]["D_mid_frac"],
        "per_weight_decay": {str(wd): {k: v for k, v in s.items() if k != "fit"} for wd, s in per_wd.items()},
    }
    if len(per_wd) > 1:
        measured["weight_decay_midpoints_agree"] = intervals_overlap([s["D_mid_ci"] for s in per_wd.values()])
    verdict = Verdict(NAME, CLAIM, judge(per_wd, crit), measured, crit, seeds=list(cfg.seeds))
    figure(cfg, m.jobs, m.hists, per_wd, run_dir)
    return finish(cfg, run_dir, verdict, m.histories, started)


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
            ci = s["D_mid_ci"]
            label += f": D_mid {s['D_mid']:.0f}" + (f" [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else "")
        final.plot([], [], color=c, label=label)
        train_min = [s["sizes"][d]["train_acc_min"] for d in sorted(s["sizes"])]
        final.plot(sorted(s["sizes"]), train_min, color=c, ls=":", lw=1)
    final.set(xscale="log", xlabel="D' (training pairs kept)", ylabel="final test accuracy (dotted: train, min)",
              title=f"ungrokking: {cfg.model.arch}, p={cfg.task.p}, grokked on {cfg.task.frac:g} of all pairs")
    final.legend(fontsize=7)
    plots.save(fig, run_dir)
