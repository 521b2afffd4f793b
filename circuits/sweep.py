"""Sweeps: a grid over config fields x seeds. Each point is one protocol run with one seed in its own
run directory (`run_point(cfg, run_dir)`, pure); results are gathered by reading the directories
into `sweep.csv`, one row per point.

Executors: `local` (worker processes, torch threads split between them; one process when
workers == 1) and `slurm` (a Slurm job array through submitit). A point whose verdict.json exists
for the same config is skipped; an unfinished one resumes from its checkpoint.
"""
from __future__ import annotations

import csv
import io
import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from circuits import api
from circuits.config import Config, deep_merge, from_dict, nest, read_value, to_dict
from circuits.errors import CircuitsError
from circuits.parallel import pmap
from circuits.progress import Bar, silenced
from circuits.experiment import run_lock
from circuits.store import atomic_write_text, read_json, remove_stale_temps, write_json
from circuits.train import resolve_device


@dataclass
class Point:
    name: str          # "task.frac=0.3,seed=1"
    cfg: Config        # one seed, no sweep of its own
    run_dir: Path
    fields: dict = field(default_factory=dict)   # the swept values, and the seed


@dataclass
class SlurmOptions:
    partition: str | None = None
    time_min: int = 60
    cpus: int = 2
    gpus: int = 0
    parallelism: int = 64        # array tasks running at once
    cluster: str = "slurm"       # submitit cluster: slurm; local / debug run the same path without Slurm


def parse_axes(items: list[str]) -> dict[str, list]:
    """['task.frac=0.2,0.3', 'optim.weight_decay=1'] -> {'task.frac': [0.2, 0.3], 'optim.weight_decay': [1]}."""
    axes = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not raw:
            raise CircuitsError(f"--sweep expects key=v1,v2,..., got {item!r}")
        axes[key.strip()] = [read_value(v) for v in raw.split(",")]
    return axes


def axes_of(cfg: Config) -> dict[str, list]:
    """cfg.sweep with every value a list (a preset may give one value for an axis)."""
    return {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in cfg.sweep.items()}


def grid(cfg: Config, axes: dict[str, list], out: Path) -> list[Point]:
    """Every combination of the axes' values, times every seed of cfg, as points under out/points/."""
    for key, values in axes.items():
        refuse_repeats(key, values)
    base = to_dict(cfg)
    base["sweep"] = {}
    pts = []
    for combo in itertools.product(*axes.values()):
        for seed in cfg.seeds:
            d = dict(base)
            for key, value in zip(axes, combo):
                d = deep_merge(d, nest(key, value))
            d["seeds"] = [seed]
            fields = {**dict(zip(axes, combo)), "seed": seed}
            name = ",".join(f"{k}={v}" for k, v in fields.items())
            pts.append(Point(name, from_dict(Config, d), Path(out) / "points" / name.replace("/", "_"), fields))
    return pts


def refuse_repeats(key: str, values: list) -> None:
    """A value listed twice for one key would make two points of one config: refused (values are
    compared as parsed, so 0.5 and 0.50 are the same value)."""
    for i, v in enumerate(values):
        if any(v == w and isinstance(v, bool) == isinstance(w, bool) for w in values[:i]):
            raise CircuitsError(f"--sweep {key} lists the value {v} twice")


def run_point(cfg: Config, run_dir) -> dict:
    """One point: the protocol run with cfg into run_dir (skipped if already finished)."""
    return api.run_config(cfg, run_dir)


def _run(point: Point) -> str:
    run_point(point.cfg, point.run_dir)
    return point.name


def run_local(points: list[Point], workers: int, bar: Bar) -> None:
    todo = [p for p in points if not api.is_done(p.cfg, p.run_dir)]
    done = len(points) - len(todo)
    bar(done, len(points))
    if todo:
        with silenced():
            pmap(_run, todo, workers, on_done=lambda n, _: bar(done + n, len(points)))


def run_slurm(points: list[Point], out: Path, opts: SlurmOptions, bar: Bar, wait: bool = True):
    """Submit the unfinished points as one Slurm job array through submitit; returns the jobs."""
    try:
        import submitit
    except ImportError:
        raise CircuitsError('--executor slurm needs submitit: pip install -e ".[slurm]"') from None
    todo = [p for p in points if not api.is_done(p.cfg, p.run_dir)]
    ex = submitit.AutoExecutor(folder=Path(out) / "slurm" / "%j", cluster=opts.cluster)
    ex.update_parameters(timeout_min=opts.time_min, cpus_per_task=opts.cpus, name="circuits-sweep",
                         slurm_partition=opts.partition, slurm_gpus_per_node=opts.gpus or None,
                         slurm_array_parallelism=opts.parallelism)
    from circuits.slurm import PointJob, completed
    jobs = ex.map_array(PointJob(), todo) if todo else []       # requeued on preemption / time limit
    if wait:
        done = len(points) - len(todo)
        bar(done, len(points))
        for job in completed(jobs):                             # as they finish, not in submission order
            job.result()
            done += 1
            bar(done, len(points))
    return jobs


def gather(points: list[Point]) -> list[dict]:
    """One row per finished point: its swept fields, status, the verdict's scalar numbers and the
    final value of every metric of metrics.csv."""
    rows = []
    for p in points:
        vpath = p.run_dir / "verdict.json"
        if not vpath.exists():
            continue
        v = read_json(vpath)
        row = {"point": p.name, **p.fields, "status": v["status"]}
        row.update({k: x for k, x in v["measured"].items() if isinstance(x, (int, float, str, bool)) or x is None})
        row.update(_final_metrics(p.run_dir / "metrics.csv"))
        rows.append(row)
    return rows


def _final_metrics(path: Path) -> dict:
    last: dict = {}
    if path.exists():
        with open(path) as f:
            for r in csv.DictReader(f):
                key = f"final_{r['metric']}" if r["split"] == "all" else f"final_{r['split']}_{r['metric']}"
                if key not in last or int(r["step"]) >= last[key][0]:
                    last[key] = (int(r["step"]), float(r["value"]))
    return {k: v for k, (_, v) in last.items()}


def write_table(rows: list[dict], path: Path) -> Path:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, cols)
    w.writeheader()
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def prestack(points: list[Point], bar: Bar, max_members: int = 64) -> None:
    """Train the unfinished points that can share a stacked model (same shape, a protocol with a
    `stop_rule`), group by group, straight into their checkpoints; running the points afterwards
    then only judges them and writes their run directories."""
    from circuits import registry, stack
    from circuits.experiment import build, save_trained, seed_checkpoint, setup

    groups: dict = {}
    for p in points:
        module = registry.get(p.cfg.protocol).module
        rule = getattr(module, "stop_rule", None)
        key = stack.stack_key(p.cfg)
        if (rule is not None and key is not None and not seed_checkpoint(p.run_dir, p.cfg.seeds[0]).exists()
                and not api.is_done(p.cfg, p.run_dir)):
            extras = getattr(module, "extra_metrics", lambda cfg: ())(p.cfg)   # e.g. grokking's Fourier strengths
            groups.setdefault((key, p.cfg.protocol, tuple(map(repr, extras))), []).append((p, rule(p.cfg), extras))
    done = 0
    for members in groups.values():
        for i in range(0, len(members), max_members):
            chunk = members[i : i + max_members]
            device = setup(chunk[0][0].cfg)
            built = [build(p.cfg, p.cfg.seeds[0], device) for p, _, _ in chunk]
            results = stack.train_stacked([m for m, _ in built], [d for _, d in built], [p.cfg for p, _, _ in chunk],
                                          [stop for _, stop, _ in chunk], device, extra_metrics=chunk[0][2])
            for (p, _, _), (model, data), res in zip(chunk, built, results):
                save_trained(p.cfg, p.cfg.seeds[0], p.run_dir, model, data, res)
            done += len(chunk)
            bar(done, sum(map(len, groups.values())))


def run_sweep(cfg: Config, out, *, workers: int | None = None, executor: str = "local",
              slurm: SlurmOptions | None = None, quiet: bool = False, stacked: bool | None = None) -> Path:
    """Run the grid cfg.sweep x cfg.seeds (skipping finished points) and write out/sweep.csv."""
    out = Path(out)
    with run_lock(out):                         # a second sweep (or --fresh) on out is refused
        axes = axes_of(cfg)
        pts = grid(cfg, axes, out)
        if out.exists():
            remove_stale_temps(out)                # a killed run's half-written files: never results
        write_json(out / "sweep.json", {"protocol": cfg.protocol, "preset": cfg.preset, "axes": axes,
                                        "seeds": cfg.seeds, "points": [p.name for p in pts]})
        bar = Bar(f"sweep {cfg.protocol} ({len(pts)} points)", quiet=quiet)
        t0 = time.perf_counter()
        if stacked is None:  # stacking is the GPU lever; on a CPU separate processes are faster
            stacked = resolve_device(cfg.train.device).type == "cuda"
        if stacked and executor == "local":
            prestack(pts, Bar(f"stacked training ({len(pts)} points)", quiet=quiet))
        if executor == "local":
            run_local(pts, workers or os.cpu_count() or 1, bar)
        elif executor == "slurm":
            run_slurm(pts, out, slurm or SlurmOptions(), bar)
        else:
            raise CircuitsError(f"--executor must be local or slurm, got {executor!r}")
        bar.close()
        path = write_table(gather(pts), out / "sweep.csv")
        if not quiet:
            print(f"{len(pts)} points in {time.perf_counter() - t0:.1f}s -> {path}")
    return path
