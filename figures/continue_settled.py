"""Do ungrokking runs that the settle rule stopped stay where they stopped? Each chosen run's
checkpoint is copied from the trained-circuit cache, marked unfinished, and trained on with no stop
rule up to its step cap: the same trajectory an unbroken run would take (the checkpoint carries the
optimiser and RNG state; its fingerprint leaves the stop rule out). Resumable: a killed run
continues from its copy.

    CIRCUITS_CACHE=/work/p113/cache python figures/continue_settled.py --arch transformer --p 113 \
        --runs 616:4,616:0,616:1,616:3 --out /work/p113/continue

Writes OUT/result.json: per run, where it settled and where it stands at the cap. Run it with the
code version that trained the runs (their cache keys hold a fingerprint of the trainer's source).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from circuits import api
from circuits.cache import cache_key
from circuits.tasks import n_inputs
from circuits.store import atomic_write_text, cache_dir, load_torch, save_torch
from protocols import ungrokking as ug


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="transformer")
    ap.add_argument("--p", type=int, default=113)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--runs", required=True, help="D':subset_seed,... (runs of the first seed's grokked network)")
    ap.add_argument("--out", required=True, help="a directory: the copies and result.json")
    args = ap.parse_args()
    cfg = api.resolve("ungrokking", args.preset, arch=args.arch, p=args.p)
    crit = ug.protocol_fields(cfg.criteria, ug.CRITERIA, "criteria")
    _, grok = ug.grokked_rule(crit["pretrain_test_acc"])
    seed = cfg.seeds[0]
    entry = cache_dir() / cache_key(cfg, seed, grok) / "model.pt"
    n_train = max(1, int(cfg.task.frac * n_inputs(cfg.task)))          # as tasks.split
    jobs = {(j.size, j.subset_seed): j for j in ug.jobs_for(cfg, seed, entry, n_train)}
    out_dir, result = Path(args.out), {}
    for pair in args.runs.split(","):
        size, subset_seed = (int(x) for x in pair.split(":"))
        job = jobs[(size, subset_seed)]
        copy = out_dir / job.name / "checkpoint.pt"
        settled_at = copy.parent / "settled_at.json"
        if not copy.exists():
            ck = load_torch(job.checkpoint)
            last = ck["result"]["history"][-1]
            ck["result"]["status"] = "done"                    # unfinished: training goes on from here
            save_torch(copy, ck)
            atomic_write_text(settled_at, json.dumps({"step": last["step"], "test_acc": last["test_acc"]}))
        h = ug.ungrok(dataclasses.replace(job, checkpoint=str(copy), settle=None))
        result[job.name] = {"settled_at": json.loads(settled_at.read_text()),
                            "at_cap": {k: h[-1][k] for k in ("step", "test_acc", "train_acc")},
                            "curve": [(r["step"], r["test_acc"]) for r in h[::4]]}
        print(job.name, "settled at", result[job.name]["settled_at"], "-> at the cap", result[job.name]["at_cap"],
              flush=True)
        atomic_write_text(out_dir / "result.json", json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
