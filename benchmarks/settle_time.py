"""Compute-aware ungrokking against the fixed-budget grid, in the same run: the subset runs stopped
once settled (params.stop_when_settled, the presets' default) against the same runs to their step
cap. The grokked network is trained first (untimed, shared through the cache); both grids then
start from it, each with its own checkpoints.

    python -m benchmarks.settle_time [--preset quick] [--arch transformer] [--p P] [--set key=value]...

Prints each grid's wall time and steps, their ratios, and both verdicts (they should agree: the
settle rule is a stopping rule, not another experiment; tests/test_ungrokking_judge.py checks it
on a small setup). At the paper preset the fixed grid is 35 runs x 30,000 steps: hours on a CPU.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from circuits import api


def run(out: Path, preset: str, arch: str, p: int | None, overrides: list[str], settle: bool) -> tuple[float, dict]:
    t = time.perf_counter()
    v = api.run_protocol("ungrokking", preset, out=out, arch=arch, p=p,
                         overrides=overrides + [f"params.stop_when_settled={str(settle).lower()}"])
    return time.perf_counter() - t, v


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--arch", default="transformer")
    ap.add_argument("--p", type=int, default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key=value, as `circuits run --set`")
    ap.add_argument("--out", default=None, help="where the runs and the cache go [default: a temporary folder]")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="settle_time_"))
    os.environ["CIRCUITS_CACHE"] = str(out / "cache")
    os.environ.setdefault("CIRCUITS_QUIET", "1")
    grok_only = args.overrides + ["params.sizes=[1]", "params.subset_seeds=[0]", "params.steps=1"]
    run(out / "grok", args.preset, args.arch, args.p, grok_only, True)        # the grokked network, untimed
    rows = {}
    for name, settle in (("settled", True), ("fixed", False)):
        wall, v = run(out / name, args.preset, args.arch, args.p, args.overrides, settle)
        m = v["measured"]
        steps = sum(r["steps"] for r in m["runs"])
        rows[name] = (wall, steps, v["status"], m["D_crit_ungrokking"], m.get("D_crit_ungrokking_ci"))
        ci = m.get("D_crit_ungrokking_ci")
        print(f"{name:<8} {len(m['runs'])} runs: {wall:7.1f} s, {steps:,} steps; {v['status']}, midpoint "
              f"{m['D_crit_ungrokking'] or float('nan'):.0f}" + (f" [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else ""), flush=True)
    (ws, ss, *_), (wf, sf, *_) = rows["settled"], rows["fixed"]
    print(f"ungrokking/{args.preset}/{args.arch}, {os.cpu_count()} cores: settled/fixed wall = {ws / wf:.3f}, "
          f"steps = {ss / sf:.3f}; verdicts {'agree' if rows['settled'][2] == rows['fixed'][2] else 'DIFFER'}")


if __name__ == "__main__":
    main()
