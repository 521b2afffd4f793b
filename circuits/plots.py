"""Figure helpers: headless (Agg unless MPLBACKEND says otherwise), PNG + PDF written atomically."""
from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib

if "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from circuits.store import atomic_write_bytes  # noqa: E402

sns.set_theme(style="whitegrid", context="paper")


def subplots(nrows=1, ncols=1, **kw):
    kw.setdefault("figsize", (5.0 * ncols, 2.8 * nrows))
    kw.setdefault("constrained_layout", True)
    return plt.subplots(nrows, ncols, squeeze=False, **kw)


def save(fig, run_dir, name: str = "figure") -> Path:
    """Write name.png and name.pdf into run_dir; returns the PNG's path."""
    for ext in ("pdf", "png"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=130)
        atomic_write_bytes(Path(run_dir) / f"{name}.{ext}", buf.getvalue())
    plt.close(fig)
    return Path(run_dir) / f"{name}.png"


def seed_band(ax, histories: list[list[dict]], key: str, label: str | None = None, color=None, log_x=True):
    """One thin line per seed and the min-max over the seeds still running shaded; rows are {step, key}.
    (A run stopped early by its protocol's criterion simply ends: nothing is filled in after it.)"""
    steps = sorted({r["step"] for h in histories for r in h if key in r and (r["step"] > 0 or not log_x)})
    if not steps:
        return
    table = np.full((len(histories), len(steps)), np.nan)
    col = {s: i for i, s in enumerate(steps)}
    for i, h in enumerate(histories):
        for r in h:
            if r["step"] in col and key in r:
                table[i, col[r["step"]]] = r[key]
    for i, row in enumerate(table):
        (line,) = ax.plot(steps, row, color=color, lw=1.3 if len(histories) == 1 else 1.0,
                          alpha=1.0 if len(histories) == 1 else 0.8, label=label if i == 0 else None)
        color = line.get_color()
    if len(histories) > 1:
        ok = (~np.isnan(table)).sum(0) >= 2
        lo = np.where(ok, np.nanmin(np.where(np.isnan(table), np.inf, table), 0), np.nan)
        hi = np.where(ok, np.nanmax(np.where(np.isnan(table), -np.inf, table), 0), np.nan)
        ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0)
    if log_x:
        ax.set_xscale("log")
