"""`circuits dcrit --preset quick` from an empty cache, as the preset runs it (compute levers: subset
runs stop once settled or in an end state) against the fixed-budget grid (every subset run to its
3,000-step cap), in the same run, each with a cache of its own.

    python -m benchmarks.dcrit_time [--preset quick] [--out DIR] [--only levers|fixed]

Prints each one's wall time, the training steps of its subset and from-scratch runs (metrics.csv),
its three D_crit estimates and verdict, and the ratios. Target (issue #14): <= 5 min on the 2-core
CPU with the levers. Time it while nothing else trains.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from circuits.loading import load

FIXED = ["--set", "params.ungrokking.stop_when_settled=false", "--set", "params.ungrokking.end_states=null"]


def run(out: Path, preset: str, extra: list[str]) -> tuple[float, int, dict]:
    """Wall seconds, training steps (every run's last step in metrics.csv) and the verdict."""
    env = {**os.environ, "CIRCUITS_CACHE": str(out / "cache"), "MPLBACKEND": "Agg", "CIRCUITS_QUIET": "1"}
    cmd = [sys.executable, "-m", "circuits", "dcrit", "--preset", preset, "--out", str(out / "run"), *extra]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    r = load(out / "run")
    return wall, int(r.metrics.groupby("run")["step"].max().sum()), r.verdict


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--out", default=None, help="where the runs and caches go [default: a temporary folder]")
    ap.add_argument("--only", choices=["levers", "fixed"], default=None)
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="dcrit_time_"))
    rows = {}
    for name, extra in (("levers", []), ("fixed", FIXED)):
        if args.only and name != args.only:
            continue
        wall, steps, v = run(out / name, args.preset, extra)
        ests = {m: e["D_crit"] for m, per_wd in v["measured"]["methods"].items() for e in per_wd.values()}
        rows[name] = (wall, steps, v["status"], ests)
        print(f"{name:<7} {wall:6.1f} s  {steps:,} steps  {v['status']}  " +
              "  ".join(f"{m} {d:.0f}" if d else f"{m} -" for m, d in ests.items()), flush=True)
    if len(rows) == 2:
        (wl, sl, vl, _), (wf, sf, vf, _) = rows["levers"], rows["fixed"]
        print(f"dcrit/{args.preset}, {os.cpu_count()} cores: levers/fixed wall = {wl / wf:.3f}, steps = {sl / sf:.3f}; "
              f"verdicts {'agree' if vl == vf else 'DIFFER'}")


if __name__ == "__main__":
    main()
