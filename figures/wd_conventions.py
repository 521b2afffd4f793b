"""Ungrokking's weight-decay comparison under both step-budget conventions, side by side: one fixed
step cap for every wd (the paper's Fig. 8) and the same decay budget lr x wd x steps (the quick
presets'), from the verdicts of the two `circuits run ungrokking` runs.

    python figures/wd_conventions.py FIXED/verdict.json EQUAL/verdict.json --out figures/NAME.png

Per wd: every run's final test accuracy against D' (dots), the mean per size (line), the fitted
midpoint and its interval (dashed line, band). The legend gives each wd's step cap and how many of
its runs settled before it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from circuits.plots import plt


def panel(ax, verdict: dict, title: str) -> None:
    m = verdict["measured"]
    runs = m.get("runs", [])
    for i, (wd, s) in enumerate(sorted(m["per_weight_decay"].items(), key=lambda kv: float(kv[0]))):
        color = f"C{i}"
        sizes = sorted(s["sizes"].values(), key=lambda x: x["D"])
        for x in sizes:
            ax.scatter([x["D"]] * len(x["test_acc_runs"]), x["test_acc_runs"], color=color, s=10, alpha=0.5)
        ax.plot([x["D"] for x in sizes], [x["test_acc"] for x in sizes], color=color)
        caps = sorted({r["step_cap"] for r in runs if r["name"].split("-")[1] == f"wd{float(wd):g}"})
        label = f"wd {float(wd):g}, cap {'/'.join(f'{c:,}' for c in caps)}: {s['n_settled']} of {s['n_runs']} settled"
        if s.get("D_mid"):
            ax.axvline(s["D_mid"], color=color, ls="--", lw=0.8)
            if s.get("D_mid_ci"):
                ax.axvspan(*s["D_mid_ci"], color=color, alpha=0.12)
            label += f"; D_mid {s['D_mid']:.0f}"
        ax.plot([], [], color=color, label=label)
    ratio = m.get("weight_decay_midpoint_ratio")
    ax.set(xscale="log", xlabel="D' (training pairs kept)", ylabel="final test accuracy", ylim=(-0.02, 1.02),
           title=f"{title}: {verdict['status']}" + (f", midpoint ratio {ratio:.3f}" if ratio else ""))
    ax.legend(fontsize=7, loc="upper left")


def caps(verdict: dict) -> dict[float, set[int]]:
    """The step caps of a verdict's subset runs, per weight decay."""
    out: dict[float, set[int]] = {}
    for r in verdict["measured"].get("runs", []):
        out.setdefault(float(r["name"].split("-wd")[1].split("-")[0]), set()).add(r["step_cap"])
    return out


def mismatch(fixed: dict, equal: dict) -> str | None:
    """Why the two verdicts are not the two conventions of one setting (None: they are)."""
    cf, ce = caps(fixed), caps(equal)
    if set(cf) != set(ce) or len(cf) < 2:
        return f"the verdicts must share two or more weight decays (fixed: {sorted(cf)}, equal: {sorted(ce)})"
    if len(set().union(*cf.values())) != 1:
        return f"the first verdict is not one fixed step cap (caps by wd: {cf}); give FIXED first, then EQUAL"
    if len(set().union(*ce.values())) == 1:
        return "the second verdict gives every wd the same step cap: not the equal-decay-budget run"
    return None


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fixed", type=Path, help="verdict.json of the fixed-budget run")
    ap.add_argument("equal", type=Path, help="verdict.json of the equal-decay-budget run")
    ap.add_argument("--out", type=Path, required=True, help="the figure (.png)")
    a = ap.parse_args(argv)
    verdicts = [json.loads(path.read_text()) for path in (a.fixed, a.equal)]
    why = mismatch(*verdicts)
    if why:
        print(f"error: {why}", file=sys.stderr)
        sys.exit(2)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, verdict, title in zip(axes, verdicts, ("one fixed step cap", "equal decay budget")):
        panel(ax, verdict, title)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=120)
    print(a.out)
    return a.out


if __name__ == "__main__":
    main()
