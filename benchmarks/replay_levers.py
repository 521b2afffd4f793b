"""What two more compute levers would have saved on a finished ungrokking run, replayed on its own
recorded histories (no training): the steps each lever spends against the run's, and the verdict
and midpoints it would have given.

    python -m benchmarks.replay_levers RUN_DIR [--end-lo 0.05] [--end-hi 0.99] [--end-window 1] [--coarse 2]

  end-state stop  a run also stops once its test accuracy has stayed below end-lo (ungrokked) or at
                  or above end-hi (kept) for end-window decay times 1/(lr wd): it reads its final
                  accuracy there;
  adaptive seeds  a coarse pass runs the first `coarse` subset seeds at every size; the other seeds
                  run only at the sizes where the coarse runs are in transition and at the nearest
                  size on either side (protocols.ungrokking.bracket).

Both are built (params.end_states, params.coarse_seeds); this replays them on a run made without.

A replay reads the histories at the run's eval_every; a real stop would fall at the same rows.
"""
from __future__ import annotations

import argparse
import statistics
import sys

from circuits.config import protocol_fields
from circuits.loading import load
from circuits.detect import held, settle_window
from protocols import ungrokking as ug


def histories(run) -> dict[str, list[dict]]:
    """name -> [{step, test_acc, train_acc}] of every subset run in metrics.csv."""
    m = run.metrics
    m = m[m["split"].isin(["test", "train"]) & (m["metric"] == "acc") & m["run"].str.contains("-D")]
    out: dict[str, dict[int, dict]] = {}
    for r in m.itertuples():
        out.setdefault(r.run, {}).setdefault(int(r.step), {"step": int(r.step)})[f"{r.split}_acc"] = float(r.value)
    return {k: [v[s] for s in sorted(v)] for k, v in out.items()}


def end_state_stop(h: list[dict], window: float, lo: float, hi: float) -> int:
    """Index of the row where the end-state rule would have stopped (the last row if never)."""
    return next((i for i in range(len(h)) if held(h[: i + 1], window, lo, hi)), len(h) - 1)


def judged(rows: list[dict], p_mod: int, crit: dict, n_boot: int) -> tuple[str, dict]:
    per_wd = ug.summarise(rows, p_mod, n_boot)
    ratio = ug.wd_ratio(rows, n_boot) if len(per_wd) > 1 else None
    status, _ = ug.analyse(per_wd, crit, ratio)
    return status, {wd: (s["D_mid"], s["D_mid_ci"]) for wd, s in per_wd.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--end-lo", type=float, default=0.05)
    ap.add_argument("--end-hi", type=float, default=0.99)
    ap.add_argument("--end-window", type=float, default=1.0, help="in decay times 1/(lr wd)")
    ap.add_argument("--coarse", type=int, default=2, help="subset seeds of the coarse pass")
    args = ap.parse_args()
    run = load(args.run_dir)
    cfg = run.config
    if cfg.protocol != "ungrokking":
        print(f"replay_levers: {args.run_dir} is a {cfg.protocol} run, not an ungrokking one", file=sys.stderr)
        raise SystemExit(2)
    crit = protocol_fields(cfg.criteria, ug.CRITERIA, "criteria")
    p = ug.params(cfg)
    seeds = sorted(p["subset_seeds"])[: args.coarse]
    hs = histories(run)

    def rows_for(end_state: bool) -> list[dict]:
        rows = []
        for name, h in hs.items():
            wd = float(name.split("-wd")[1].split("-D")[0])
            i = end_state_stop(h, settle_window(cfg.optim.lr, wd, args.end_window), args.end_lo, args.end_hi) \
                if end_state else len(h) - 1
            rows.append({"name": name, "wd": wd, "D": int(name.split("-D")[1].split("-")[0]),
                         "seed": name.split("-wd")[0] + "-" + name.rsplit("-s", 1)[1],
                         "subset_seed": int(name.rsplit("-s", 1)[1]), "test_acc": h[i]["test_acc"],
                         "train_acc": h[i]["train_acc"], "steps": h[i]["step"]})
        return rows

    def adaptive(rows: list[dict]) -> list[dict]:
        keep = []
        for wd in sorted({r["wd"] for r in rows}):
            sel = [r for r in rows if r["wd"] == wd]
            coarse = [r for r in sel if r["subset_seed"] in seeds]
            near = ug.bracket({d: statistics.mean(r["test_acc"] for r in coarse if r["D"] == d)
                               for d in {r["D"] for r in coarse}}, crit)
            keep += [r for r in sel if r["subset_seed"] in seeds or r["D"] in near]
        return keep

    base = rows_for(False)
    plans = {"as run": base, "end-state stop": rows_for(True), "adaptive seeds": adaptive(base),
             "both": adaptive(rows_for(True))}
    total = sum(r["steps"] for r in base)
    print(f"{args.run_dir}: {len(base)} subset runs, {total:,} steps as run (lr {cfg.optim.lr:g}; end states "
          f"< {args.end_lo:g} or >= {args.end_hi:g} over {args.end_window:g} decay times; coarse seeds {seeds})")
    for name, rows in plans.items():
        steps = sum(r["steps"] for r in rows)
        status, mids = judged(rows, cfg.task.p, crit, p["n_boot"])
        mid_text = "; ".join(f"wd {wd:g}: {m:.0f}" + (f" [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else "") if m else f"wd {wd:g}: -"
                             for wd, (m, ci) in mids.items())
        print(f"  {name:15s} {len(rows):3d} runs {steps:9,d} steps  ratio {steps / total:.3f}  {status:12s} {mid_text}")


if __name__ == "__main__":
    main()
