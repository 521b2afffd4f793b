"""Time a 16-point sweep of the quick grokking preset: the local executor's worker processes against
the same 16 points one after another in one process, and the resume of a finished sweep.

    python -m benchmarks.sweep_time [--arch mlp] [--points 16] [--workers N]

Targets (2-core CPU): parallel / sequential <= 0.6; re-running a finished sweep < 5 s.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from circuits import api
from circuits.sweep import run_sweep


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="mlp")
    ap.add_argument("--points", type=int, default=16, help="seeds 0..N-1 of the quick preset")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=None, help="where the sweeps go [default: a temporary folder]")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="sweep_time_"))
    cfg = api.resolve("grokking", "quick", arch=args.arch, seeds=args.points)
    cfg.sweep = {"optim.weight_decay": [1.0]}   # a one-value axis: the points are the seeds

    timings = {}
    for name, workers in (("sequential", 1), ("parallel", args.workers), ("resume", args.workers)):
        t = time.perf_counter()
        run_sweep(cfg, out / ("sequential" if name == "sequential" else "parallel"), workers=workers,
                  quiet=True, stacked=False)
        timings[name] = time.perf_counter() - t
        print(f"{name:<10} ({workers} worker(s)): {timings[name]:7.1f} s", flush=True)
    print(f"{args.points} points of grokking/quick/{args.arch}, {os.cpu_count()} cores: "
          f"parallel/sequential = {timings['parallel'] / timings['sequential']:.3f} (target <= 0.6); "
          f"resume of the finished sweep {timings['resume']:.2f} s (target < 5 s)")


if __name__ == "__main__":
    main()
