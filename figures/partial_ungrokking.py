"""Where an unfinished `circuits run ungrokking` stands: the grokked network and every subset run
read from the trained-circuit cache (weights-only loads), as JSON and a figure.

    CIRCUITS_CACHE=/work/p113/cache python figures/partial_ungrokking.py --arch transformer --p 113 \
        --out figures/p113_ungrokking_partial

Per run: D', subset seed, steps so far, test and train accuracy, and whether it has finished
(stopped once settled, or at its step cap). With at least one finished run at every size, the
transition is fitted to the finished runs (marked partial). Run it with the code version that
trains the run (its cache keys hold a fingerprint of the trainer's source).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from circuits import api
from circuits.cache import cache_key
from circuits.fit import fit_transition
from circuits.plots import plt
from circuits.store import cache_dir, load_torch
from protocols import ungrokking as ug


def state(cfg) -> dict:
    crit = ug.protocol_fields(cfg.criteria, ug.CRITERIA, "criteria")
    _, grok = ug.grokked_rule(crit["pretrain_test_acc"])
    seed = cfg.seeds[0]
    entry = cache_dir() / cache_key(cfg, seed, grok) / "model.pt"
    if not entry.exists():
        sys.exit(f"no grokked network in the cache yet ({entry})")
    g = load_torch(entry)["result"]
    n_train = max(1, round(cfg.task.frac * cfg.task.p ** cfg.task.k))
    runs = []
    for job in ug.jobs_for(cfg, seed, entry, n_train):
        h, finished = ug.recorded(job), True                  # finished: its record (or another cap's)
        if h is None and Path(job.checkpoint).exists():       # training (or killed): its checkpoint
            res = load_torch(job.checkpoint)["result"]
            h = res["history"]
            finished = res["status"] == "stopped" or h[-1]["step"] >= job.steps
        if h is None:
            continue
        runs.append({"name": job.name, "D": job.size, "subset_seed": job.subset_seed, "steps": h[-1]["step"],
                     "step_cap": job.steps, "test_acc": h[-1]["test_acc"], "train_acc": h[-1]["train_acc"],
                     "finished": finished,
                     "curve": [(r["step"], r["test_acc"]) for r in h]})
    return {"grokked": {"steps": g["step"], "test_acc": g["history"][-1]["test_acc"], "n_train": n_train},
            "runs": runs, "runs_planned": len(ug.jobs_for(cfg, seed, entry, n_train))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="transformer")
    ap.add_argument("--p", type=int, default=113)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--out", required=True, help="path without extension: writes OUT.json and OUT.png")
    args = ap.parse_args()
    cfg = api.resolve("ungrokking", args.preset, arch=args.arch, p=args.p)
    s = state(cfg)
    done = [r for r in s["runs"] if r["finished"]]
    sizes = sorted({j.size for j in ug.jobs_for(cfg, cfg.seeds[0], "x", s["grokked"]["n_train"])})
    fit = None
    if {r["D"] for r in done} == set(sizes):
        t = fit_transition([r["D"] for r in done], [r["test_acc"] for r in done], [r["subset_seed"] for r in done])
        fit = {"D_mid": t.D_mid, "D_mid_ci": t.ci, "D_mid_seed_range": t.seed_range, "width": t.width_est.value,
               "note": "fitted to the finished runs only"}
    out = {"command": f"circuits run ungrokking --arch {args.arch} --p {args.p}", "preset": cfg.preset,
           "state": "partial" if len(done) < s["runs_planned"] else "all runs finished",
           "grokked": s["grokked"], "runs_planned": s["runs_planned"], "runs_finished": len(done),
           "fit": fit, "runs": [{k: v for k, v in r.items() if k != "curve"} for r in s["runs"]]}
    Path(args.out + ".json").write_text(json.dumps(out, indent=1))

    fig, (curves, final) = plt.subplots(1, 2, figsize=(11, 4))
    cmap = plt.get_cmap("viridis")
    for r in s["runs"]:
        c = cmap(sizes.index(r["D"]) / max(len(sizes) - 1, 1))
        steps, acc = zip(*r["curve"])
        curves.plot([x + 1 for x in steps], acc, color=c, lw=1, ls="-" if r["finished"] else ":",
                    label=f"D'={r['D']}" if r["subset_seed"] == 0 else None)
        final.scatter(r["D"], r["test_acc"], color=c, marker="o" if r["finished"] else "x", s=18)
    curves.set(xscale="log", xlabel="step on the subset (+1)", ylabel="test accuracy",
               title="test accuracy (dotted: still training)")
    curves.legend(fontsize=7, ncol=2)
    if fit and fit["D_mid"]:
        final.axvline(fit["D_mid"], color="black", ls="--", lw=0.8, label=f"midpoint {fit['D_mid']:.0f} (finished runs)")
        final.legend(fontsize=7)
    final.set(xscale="log", xlabel="D' (training pairs kept)", ylabel="test accuracy now (x: still training)",
              title=f"ungrokking, {cfg.model.arch} p={cfg.task.p}: {len(done)}/{s['runs_planned']} runs finished")
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=120)
    print(f"{len(done)}/{s['runs_planned']} runs finished; {args.out}.json, {args.out}.png"
          + (f"; midpoint {fit['D_mid']:.0f}" if fit and fit["D_mid"] else ""))


if __name__ == "__main__":
    main()
