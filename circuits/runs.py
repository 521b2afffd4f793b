"""Looking at finished (and unfinished) runs: `circuits show RUN`, `circuits runs [DIR]`,
`circuits compare RUN RUN ...`. Reads only a run directory's JSON, YAML and CSV files (no pickle),
so it is safe on a directory someone handed you; `show` and `runs` do not import torch.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from circuits.config import load_yaml
from circuits.errors import CircuitsError

LOCK_FILE = ".circuits.lock"      # as circuits.experiment (not imported: it pulls in torch)
NUMBERS = 8                       # measured numbers shown by `show`


def _json(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def is_run(path: Path) -> bool:
    """A directory circuits wrote a run into (run.json, or config.yaml with meta.json)."""
    return (path / "run.json").is_file() or ((path / "config.yaml").is_file() and (path / "meta.json").is_file())


def numbers(measured: dict, n: int = NUMBERS) -> dict:
    """The verdict's first n scalar measurements (numbers, not flags)."""
    out = {}
    for k, v in measured.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = v
            if len(out) == n:
                break
    return out


def state(run_dir: Path, verdict: dict | None) -> str:
    """done (with its status) | running (its lock is held) | unfinished (stopped before its verdict)."""
    if verdict is not None:
        return verdict.get("status", "?")
    lock = run_dir / LOCK_FILE
    if lock.exists():
        try:
            import fcntl
            with open(lock) as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(f, fcntl.LOCK_UN)
                except OSError:
                    return "running"
        except OSError:
            pass
    return "unfinished"


def show(run_dir) -> dict:
    """What a run directory holds: protocol, preset, model, p, seeds, status, claim, the claims'
    statuses, key numbers, the figure's path, when and how long. A CircuitsError if it is not a run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CircuitsError(f"{run_dir} is not a folder")
    if not is_run(run_dir):
        raise CircuitsError(f"{run_dir} is not a circuits run directory (no run.json, or config.yaml with meta.json)")
    try:
        cfg = load_yaml(run_dir / "config.yaml")
    except CircuitsError:
        cfg = (_json(run_dir / "run.json") or {}).get("config") or {}
    verdict, meta = _json(run_dir / "verdict.json"), _json(run_dir / "meta.json") or {}
    model, task = cfg.get("model") or {}, cfg.get("task") or {}
    figure = run_dir / "figure.png"
    return {
        "run_dir": str(run_dir), "protocol": cfg.get("protocol"), "preset": cfg.get("preset"),
        "arch": model.get("arch"), "p": task.get("p"), "frac": task.get("frac"), "seeds": cfg.get("seeds"),
        "status": state(run_dir, verdict), "claim": (verdict or {}).get("claim"),
        "claims": {c["claim"]: c["status"] for c in ((verdict or {}).get("measured") or {}).get("claims") or []
                   if isinstance(c, dict) and "claim" in c},
        "numbers": numbers((verdict or {}).get("measured") or {}),
        "figure": str(figure) if figure.exists() else None,
        "weights": {"seeds": sorted(int(d.name[4:]) for d in run_dir.glob("seed*") if d.name[4:].isdigit()
                                    and (d / "model.safetensors").exists()),      # circuits.weights' layout
                    "networks": len(list((run_dir / "networks").glob("*.safetensors")))},
        "live": sorted(str(f.relative_to(run_dir)) for f in [*run_dir.glob("seed*/metrics.live.csv"),
                                                            *run_dir.glob("live/*.csv")]),
        "started": meta.get("start"), "ended": meta.get("end"), "seconds": meta.get("seconds"),
        "device": meta.get("device"), "git_commit": meta.get("git_commit"),
    }


def show_text(s: dict) -> str:
    lines = [f"{s['run_dir']}",
             f"  {s['protocol']} ({s['preset']} preset): {s['arch']}, p = {s['p']}, frac {s['frac']}, seeds {s['seeds']}",
             f"  status: {s['status']}" + (f"  ({s['seconds']:.0f} s, ended {s['ended']})" if s["seconds"] else "")]
    if s["claim"]:
        lines.append(f"  claim: {s['claim']}")
    lines += [f"    {st:<12} {c}" for c, st in s["claims"].items()]
    if s["numbers"]:
        lines.append("  measured: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in s["numbers"].items()))
    lines.append(f"  figure: {s['figure'] or '(none yet)'}")
    if s["live"]:
        lines.append(f"  live metrics: {len(s['live'])} file(s), e.g. {s['live'][0]} (appended at each evaluation)")
    w = s["weights"]
    if w["seeds"] or w["networks"]:
        lines.append("  weights: " + ", ".join(
            ([f"seed{{{','.join(map(str, w['seeds']))}}}/model.safetensors"] if w["seeds"] else [])
            + ([f"{w['networks']} networks in networks/"] if w["networks"] else []))
            + "  (circuits.load(run).model(seed) / .network(name))")
    return "\n".join(lines)


def find_runs(root) -> list[dict]:
    """show() of every run directory under root (root itself included), newest first."""
    root = Path(root)
    if not root.is_dir():
        raise CircuitsError(f"{root} is not a folder")
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        path = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "seed")))   # seedN: checkpoints
        if is_run(path):
            found.append(show(path))
    return sorted(found, key=lambda s: s["started"] or "", reverse=True)


def runs_table(found: list[dict]) -> str:
    head = ("run directory", "protocol", "preset", "arch", "p", "status", "started")
    rows = [(s["run_dir"], s["protocol"] or "?", s["preset"] or "?", s["arch"] or "?", str(s["p"]), s["status"],
             s["started"] or "") for s in found]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])


def accuracy_curves(run_dir) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{run name (seed): {"train": [(step, acc)], "test": [...]}} from metrics.csv."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise CircuitsError(f"{run_dir} has no metrics.csv (has it finished?)")
    out: dict = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("metric") == "acc" and row.get("split") in ("train", "test") and row.get("value") not in ("", None):
                out.setdefault(row["run"], {}).setdefault(row["split"], []).append((int(row["step"]), float(row["value"])))
    return out


def compare(run_dirs: list, out) -> tuple[Path, str]:
    """One figure overlaying the runs' train and test accuracy against step (each run's seeds as thin
    lines), and a table of their verdicts' numbers; returns (figure path, table text)."""
    if len(run_dirs) < 2:
        raise CircuitsError("compare needs at least two run directories")
    shown = [show(d) for d in run_dirs]
    curves = [accuracy_curves(d) for d in run_dirs]
    from circuits import plots
    fig, ax = plots.subplots(1, 2, figsize=(11, 4))
    for i, (s, runs) in enumerate(zip(shown, curves)):
        label = f"{Path(s['run_dir']).name}: {s['protocol']} {s['arch']} p={s['p']}"
        for j, (name, splits) in enumerate(sorted(runs.items())):
            for k, split in enumerate(("train", "test")):
                if split in splits:
                    steps, acc = zip(*splits[split])
                    ax[0, k].plot(steps, acc, color=f"C{i}", lw=1, alpha=0.8, label=label if j == 0 else None)
    for k, split in enumerate(("train", "test")):
        ax[0, k].set(xscale="log", xlabel="step", ylabel=f"{split} accuracy", title=f"{split} accuracy")
        ax[0, k].legend(fontsize=7)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots.save(fig, out, name="compare")
    keys = list(dict.fromkeys(k for s in shown for k in s["numbers"]))
    head = ["", *[Path(s["run_dir"]).name for s in shown]]
    rows = [["status", *[s["status"] for s in shown]], ["arch", *[str(s["arch"]) for s in shown]],
            ["p", *[str(s["p"]) for s in shown]]]
    rows += [[k, *[_fmt(s["numbers"].get(k)) for s in shown]] for k in keys]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])
    return out / "compare.png", text


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
