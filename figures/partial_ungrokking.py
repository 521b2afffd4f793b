"""Where an unfinished `circuits run ungrokking` stands: the grokked network and every subset run
read from the trained-circuit cache (weights-only loads), as JSON and a figure.

    CIRCUITS_CACHE=/work/p113/cache python figures/partial_ungrokking.py --arch transformer --p 113 \
        --set 'params.weight_decays=[0.3,1,3]' --out figures/p113_ungrokking_partial

Give it the flags the run was started with (--set as on `circuits run`): it reads the runs that
config plans. Per run: weight decay, D', subset seed, steps so far, test and train accuracy, and
whether it has finished (stopped by its rule, at its step cap, or decided by another step cap's
record). Per weight decay with at least one finished run at every size, the transition is fitted
to its finished runs (marked partial; never across weight decays). Run it with the code version
that trains the run (its cache keys hold a fingerprint of the trainer's source).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from circuits import api
from circuits.cache import cache_key
from circuits.tasks import n_inputs
from circuits.errors import CircuitsError
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
    n_train = max(1, int(cfg.task.frac * n_inputs(cfg.task)))          # as tasks.split
    jobs = ug.jobs_for(cfg, seed, entry, n_train)
    runs = []
    for job in jobs:
        h, finished = ug.recorded(job), True                  # finished: its record (or another cap's)
        if h is None and Path(job.checkpoint).exists():       # training (or killed): its checkpoint
            res = load_torch(job.checkpoint)["result"]
            h = res["history"]
            finished = res["status"] == "stopped" or h[-1]["step"] >= job.steps
        if h is None:
            continue
        runs.append({"name": job.name, "wd": job.weight_decay, "D": job.size, "subset_seed": job.subset_seed, "steps": h[-1]["step"],
                     "step_cap": job.steps, "test_acc": h[-1]["test_acc"], "train_acc": h[-1]["train_acc"],
                     "finished": finished,
                     "curve": [(r["step"], r["test_acc"]) for r in h]})
    return {"grokked": {"steps": g["step"], "test_acc": g["history"][-1]["test_acc"], "n_train": n_train},
            "runs": runs, "runs_planned": len(ug.planned(jobs, ug.params(cfg), crit))}


def fits(runs: list[dict], sizes: list[int]) -> dict[str, dict | None]:
    """Per weight decay ("wd 1"), the transition fitted to its finished runs once every size has one
    (else None): a curve is never fitted across weight decays."""
    out = {}
    for wd in sorted({r["wd"] for r in runs}):
        done = [r for r in runs if r["wd"] == wd and r["finished"]]
        fit = None
        if {r["D"] for r in done} == set(sizes):
            t = fit_transition([r["D"] for r in done], [r["test_acc"] for r in done], [r["subset_seed"] for r in done])
            fit = {"D_mid": t.D_mid, "D_mid_ci": t.ci, "D_mid_seed_range": t.seed_range, "width": t.width_est.value,
                   "runs": len(done), "note": "fitted to the finished runs only"}
        out[f"wd {wd:g}"] = fit
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="transformer")
    ap.add_argument("--p", type=int, default=113)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                    help="as on `circuits run` (repeatable): the run's config, so its runs are the ones read")
    ap.add_argument("--out", required=True, help="path without extension: writes OUT.json and OUT.png")
    args = ap.parse_args()
    try:
        cfg = api.resolve("ungrokking", args.preset, arch=args.arch, p=args.p, overrides=args.overrides)
    except CircuitsError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    s = state(cfg)
    done = [r for r in s["runs"] if r["finished"]]
    sizes = sorted({j.size for j in ug.jobs_for(cfg, cfg.seeds[0], "x", s["grokked"]["n_train"])})
    wds = sorted({j.weight_decay for j in ug.jobs_for(cfg, cfg.seeds[0], "x", s["grokked"]["n_train"])})
    fit = fits(s["runs"], sizes)
    command = " ".join([f"circuits run ungrokking --arch {args.arch} --p {args.p}"]
                       + [f"--preset {args.preset}"] * bool(args.preset) + [f"--set '{o}'" for o in args.overrides])
    out = {"command": command, "preset": cfg.preset,
           "state": "partial" if len(done) < s["runs_planned"] else "all runs finished",
           "grokked": s["grokked"], "runs_planned": s["runs_planned"], "runs_finished": len(done),
           "fit": fit, "runs": [{k: v for k, v in r.items() if k != "curve"} for r in s["runs"]]}
    Path(args.out + ".json").write_text(json.dumps(out, indent=1))
    figure(cfg, s, sizes, wds, fit, args.out + ".png")
    mids = "; ".join(f"{wd}: midpoint {f['D_mid']:.0f}" for wd, f in fit.items() if f and f["D_mid"])
    print(f"{len(done)}/{s['runs_planned']} runs finished; {args.out}.json, {args.out}.png" + (f"; {mids}" if mids else ""))


def figure(cfg, s: dict, sizes: list[int], wds: list[float], fit: dict, path: str) -> None:
    """One panel of test-accuracy curves per weight decay (colour: D'), then every run's accuracy
    now against D' (colour: weight decay) with each fitted midpoint."""
    fig, axes = plt.subplots(1, len(wds) + 1, figsize=(5.5 * (len(wds) + 1), 4), squeeze=False)
    size_c, wd_c = plt.get_cmap("viridis"), plt.get_cmap("tab10")
    final = axes[0, -1]
    for i, (wd, curves) in enumerate(zip(wds, axes[0, :-1])):
        for r in [r for r in s["runs"] if r["wd"] == wd]:
            steps, acc = zip(*r["curve"])
            curves.plot([x + 1 for x in steps], acc, color=size_c(sizes.index(r["D"]) / max(len(sizes) - 1, 1)),
                        lw=1, ls="-" if r["finished"] else ":", label=f"D'={r['D']}" if r["subset_seed"] == 0 else None)
            final.scatter(r["D"], r["test_acc"], color=wd_c(i), marker="o" if r["finished"] else "x", s=18,
                          label=f"wd {wd:g}" if r is next(q for q in s["runs"] if q["wd"] == wd) else None)
        curves.set(xscale="log", xlabel="step on the subset (+1)", ylabel="test accuracy",
                   title=f"wd {wd:g}: test accuracy (dotted: still training)")
        curves.legend(fontsize=7, ncol=2)
        f = fit.get(f"wd {wd:g}")
        if f and f["D_mid"]:
            final.axvline(f["D_mid"], color=wd_c(i), ls="--", lw=0.8, label=f"wd {wd:g}: midpoint {f['D_mid']:.0f}")
    done = sum(r["finished"] for r in s["runs"])
    final.legend(fontsize=7)
    final.set(xscale="log", xlabel="D' (training pairs kept)", ylabel="test accuracy now (x: still training)",
              title=f"ungrokking, {cfg.model.arch} p={cfg.task.p}: {done}/{s['runs_planned']} runs finished")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
