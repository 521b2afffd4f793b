"""Figure helpers: headless (Agg unless MPLBACKEND says otherwise), PNG + PDF written atomically."""
from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib

if "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from circuits.store import atomic_write_bytes  # noqa: E402

sns.set_theme(style="whitegrid", context="paper")


def subplots(nrows=1, ncols=1, **kw):
    kw.setdefault("figsize", (5.0 * ncols, 2.8 * nrows))
    kw.setdefault("constrained_layout", True)
    return plt.subplots(nrows, ncols, squeeze=False, **kw)


def setting(cfg) -> str:
    """The run's setting in a few words, for a figure's title: protocol, model, p, seeds."""
    from circuits.config import describe
    model = describe(cfg.model)
    seeds = cfg.seeds if len(cfg.seeds) <= 6 else f"{cfg.seeds[0]}..{cfg.seeds[-1]} ({len(cfg.seeds)})"
    return f"{cfg.protocol} ({cfg.preset}): {model}, p = {cfg.task.p}, frac {cfg.task.frac:g}, seeds {seeds}"


def save(fig, run_dir, cfg=None, name: str = "figure") -> Path:
    """Write name.png and name.pdf into run_dir, titled with the run's setting (cfg); returns the PNG's path."""
    if cfg is not None:
        fig.suptitle(setting(cfg), fontsize=9)
    for ext in ("pdf", "png"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=130)
        atomic_write_bytes(Path(run_dir) / f"{name}.{ext}", buf.getvalue())
    plt.close(fig)
    return Path(run_dir) / f"{name}.png"


def long_frame(histories: list[list[dict]], key: str, log_x: bool = True):
    """The seeds' histories as a long frame (seed, step, value), as metrics.csv holds them."""
    import pandas as pd
    rows = [(i, r["step"], r[key]) for i, h in enumerate(histories) for r in h
            if key in r and r[key] is not None and (r["step"] > 0 or not log_x)]
    return pd.DataFrame(rows, columns=["seed", "step", "value"])


def _min_max(values):
    return values.min(), values.max()


def seed_band(ax, histories: list[list[dict]], key: str, label: str | None = None, color=None, log_x=True):
    """One thin line per seed and the min-max over the seeds shaded (seaborn, from the long frame);
    rows are {step, key}. A run stopped early by its protocol's criterion simply ends: where one seed
    is left the band is that seed's line."""
    frame = long_frame(histories, key, log_x)
    if frame.empty:
        return
    color = color or ax._get_lines.get_next_color()
    many = frame.seed.nunique() > 1
    sns.lineplot(data=frame, x="step", y="value", units="seed", estimator=None, ax=ax, color=color,
                 lw=1.0 if many else 1.3, alpha=0.8 if many else 1.0, legend=False)
    if label:
        ax.plot([], [], color=color, lw=1.3, label=label)                      # one legend entry for the seeds
    if many:
        sns.lineplot(data=frame, x="step", y="value", estimator="median", errorbar=_min_max, ax=ax, color=color,
                     lw=0, err_kws={"alpha": 0.2, "lw": 0}, legend=False)
    ax.set_ylabel(key)
    if log_x:
        ax.set_xscale("log")
