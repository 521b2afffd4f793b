"""What every protocol does around training: build the task and model for a seed, train with a
checkpoint in the run directory, and write the run directory's files at the end.

A run directory knows what produced it: run.json holds the run's fingerprint (a hash of the
resolved config without the fields that only change speed, SPEED_ONLY) and that config.
`check_run_dir` refuses a directory that holds a run of another config, before anything is
written, so a changed config never resumes the old checkpoints nor returns the old verdict.
"""
from __future__ import annotations

import csv
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from circuits.config import Config, from_dict, load_yaml, to_dict
from circuits.detect import Verdict
from circuits.errors import CircuitsError
from circuits.models import build_model
from circuits.progress import Bar
from circuits import weights
from circuits.loggers import make_logger
from circuits.store import (atomic_write_text, config_hash, locked, meta, metric_rows, plain, read_json,
                            remove_stale_temps, save_torch, write_config, write_json, write_metrics)
from circuits.tasks import Dataset, make_dataset
from circuits.train import Phase, Result, checkpoint_fingerprint, resolve_device, train

RUN_FILE = "run.json"                # the run's fingerprint and config
LOCK_FILE = ".circuits.lock"         # held while a protocol runs in the directory
SPEED_ONLY = ("train.threads", "train.device", "train.checkpoint_every", "train.save_every", "train.log",
              "params.workers")                     # change how a run is kept or watched, never its numbers
SHOWN_DIFFERENCES = 3                # differing keys named in the error


@dataclass
class Trained:
    seed: int
    model: torch.nn.Module
    data: Dataset
    result: Result


def setup(cfg: Config) -> torch.device:
    """Set torch's thread count (train.threads, if set) and resolve the device. Callers that must
    leave the thread count as they found it use `torch_threads`."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    return resolve_device(cfg.train.device)


@contextmanager
def torch_threads(n: int = 0):
    """Run the block with n torch threads (0: as they are) and restore the count afterwards."""
    before = torch.get_num_threads()
    if n and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def build(cfg: Config, seed: int, device) -> tuple[torch.nn.Module, Dataset]:
    """The task (split by task.split_seed) and a model initialised from `seed`."""
    data = make_dataset(cfg.task).to(device)
    torch.manual_seed(seed)
    model = build_model(cfg.model, data.d_vocab, data.n_ctx).to(device)
    return model, data


def seed_checkpoint(run_dir, seed: int) -> Path:
    """Where train_seed keeps a seed's checkpoint."""
    return Path(run_dir) / f"seed{seed}" / "checkpoint.pt"


def seed_fingerprint_extra(cfg: Config) -> dict:
    """What train_seed adds to a checkpoint's fingerprint: the run's (criteria, stop rule, protocol)."""
    return {"run": run_fingerprint(cfg)}


def train_seed(cfg: Config, seed: int, run_dir, *, stop=None, phases: list[Phase] | None = None,
               extra_metrics=(), quiet: bool = False, label: str | None = None) -> Trained:
    """Train one seed of `cfg`, checkpointing into run_dir/seed{seed}/ (a re-run resumes there). While
    it trains, each evaluation row is appended to seed{seed}/metrics.live.csv and, with
    train.save_every, the weights are kept along the way; at the end, seed{seed}/model.safetensors."""
    seed_dir = Path(run_dir) / f"seed{seed}"
    with torch_threads(cfg.train.threads):
        device = resolve_device(cfg.train.device)
        model, data = build(cfg, seed, device)
        bar = Bar(label or f"{cfg.protocol} {cfg.model.arch} seed {seed}", quiet=quiet)
        live = LiveMetrics(seed_dir / LIVE_METRICS)
        logger = make_logger(cfg.train.log, run_dir, seed, to_dict(cfg))

        def progress(step: int, total: int, row: dict) -> None:        # every evaluation row, as metrics.csv
            bar(step, total, row)
            live.add(row)
            if logger:
                logger.log(step, row)
            if cfg.train.save_every and step % cfg.train.save_every == 0:
                weights.save_weights(model, weights.snapshot_path(seed_dir, step), arch=cfg.model.arch, step=step)

        try:
            result = train(model, data, cfg.optim, cfg.train, phases=phases, stop=stop, extra_metrics=extra_metrics,
                           checkpoint=seed_checkpoint(run_dir, seed), progress=progress, seed=seed,
                           fingerprint_extra=seed_fingerprint_extra(cfg))
        finally:
            if logger:
                logger.close()
        bar.close()
        weights.save_weights(model, weights.final_path(seed_dir), arch=cfg.model.arch, step=result.step)
    return Trained(seed, model, data, result)


LIVE_METRICS = "metrics.live.csv"
LIVE = "live"                   # run_dir/live/NAME.csv: the networks of cache-based protocols, as they train


class LiveMetrics:
    """A run's evaluation rows appended to a CSV as they come (readable while it trains): a seed's
    seed{N}/metrics.live.csv, or live/NAME.csv for the networks of cache-based protocols. A resumed
    run first drops the rows at or after the step it resumes from (they are computed again)."""

    def __init__(self, path: Path):
        self.path, self.fields = path, None

    def add(self, row: dict) -> None:
        if self.fields is None:
            self.fields = [k for k in row if k != "phase"]
            kept = self._rows_before(row["step"])
            lines = [",".join(self.fields)] + [",".join(r.get(k, "") for k in self.fields) for r in kept]
            atomic_write_text(self.path, "\n".join(lines) + "\n")
        with open(self.path, "a") as f:
            f.write(",".join(_cell(row.get(k)) for k in self.fields) + "\n")

    def _rows_before(self, step: int) -> list[dict]:
        try:
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, csv.Error, UnicodeDecodeError):
            return []
        return [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) < step
                and list(r) == self.fields]


def live_progress(bar, live: Path | str | None):
    """A progress callback: the bar (if any) and, with a path, each evaluation row appended there."""
    if not live:
        return bar
    rows = LiveMetrics(Path(live))

    def progress(step: int, total: int, row: dict) -> None:
        if bar is not None:
            bar(step, total, row)
        rows.add(row)
    return progress


def _cell(v) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def save_trained(cfg: Config, seed: int, run_dir, model, data: Dataset, result: Result) -> Path:
    """Write a seed trained elsewhere (a stacked sweep) as the finished checkpoint train_seed of
    the same cfg, seed and run_dir resumes (and so returns at once), and its final weights."""
    fp = checkpoint_fingerprint(model, data, cfg.optim, cfg.train, [Phase(cfg.train.steps)], seed,
                                seed_fingerprint_extra(cfg))
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "opt": None,
             "result": vars(result), "pos": {"phase": 0, "phase_step": result.step, "opt_step": result.step},
             "fingerprint": fp}
    weights.save_weights(model, weights.final_path(Path(run_dir) / f"seed{seed}"), arch=cfg.model.arch,
                         step=result.step)
    return save_torch(seed_checkpoint(run_dir, seed), state)


# ---------------------------------------------------------------- what produced a run directory

def fingerprint_config(d: dict) -> dict:
    """A config dict without the fields that only change speed (SPEED_ONLY)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for key in SPEED_ONLY:
        section, name = key.split(".")
        if isinstance(out.get(section), dict):
            out[section].pop(name, None)
    return plain(out)


def run_fingerprint(cfg: Config) -> str:
    """A hash of the resolved config minus the speed-only fields: equal for runs with equal results."""
    return config_hash(fingerprint_config(to_dict(cfg)))


def recorded_config(run_dir) -> dict | None:
    """The (fingerprinted) config of the run a directory holds: from run.json, else from an older
    run's config.yaml; None if there is none, or none readable."""
    run_dir = Path(run_dir)
    try:
        rec = read_json(run_dir / RUN_FILE)
        if isinstance(rec, dict) and isinstance(rec.get("config"), dict):
            return normalised(rec["config"])
    except (OSError, ValueError):
        pass
    try:
        if (run_dir / "config.yaml").is_file():
            return normalised(load_yaml(run_dir / "config.yaml"))
    except (CircuitsError, OSError):
        pass
    return None


def normalised(d: dict) -> dict:
    """A recorded config as this version reads it: fields added since take their defaults (so a
    new field that keeps the old behaviour does not make it another config), speed-only fields go."""
    try:
        d = to_dict(from_dict(Config, d))
    except (CircuitsError, TypeError, ValueError):
        pass                                   # a field this version does not know: compared as it is
    return fingerprint_config(d)


def check_run_dir(cfg: Config, run_dir) -> None:
    """Refuse (CircuitsError) a run directory that is a file or holds a run of another config."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise CircuitsError(f"{run_dir} is a file, not a run directory; use --out for a directory")
    old = recorded_config(run_dir) if run_dir.is_dir() else None
    new = fingerprint_config(to_dict(cfg))
    if old is None or config_hash(old) == config_hash(new):
        return
    raise CircuitsError(f"{run_dir} holds a run of another config ({differences(old, new)}); "
                        f"use --fresh to replace it or --out for a new directory")


def differences(old: dict, new: dict, shown: int = SHOWN_DIFFERENCES) -> str:
    """'optim.weight_decay: 1.0 -> 0.0, ...': the first differing keys of two nested dicts."""
    a, b = _flat(old), _flat(new)
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, _UNSET) != b.get(k, _UNSET)]
    parts = [f"{k}: {_shown(a.get(k, _UNSET))} -> {_shown(b.get(k, _UNSET))}" for k in keys[:shown]]
    if len(keys) > shown:
        parts.append(f"and {len(keys) - shown} more")
    return ", ".join(parts) or "its fingerprint differs"


_UNSET = object()


def _shown(v) -> str:
    return "unset" if v is _UNSET else str(v)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def is_run_dir(path) -> bool:
    """Whether path is recognisably a directory circuits wrote: a run (run.json, or config.yaml with
    a meta.json of ours) or a sweep (sweep.json), and no version-control folder."""
    path = Path(path)
    if not path.is_dir() or (path / ".git").exists():
        return False
    for name, keys in ((RUN_FILE, ("fingerprint", "config")), ("meta.json", ("circuits", "argv")),
                       ("sweep.json", ("protocol", "points"))):
        try:
            rec = read_json(path / name)
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and all(k in rec for k in keys):
            return name != "meta.json" or (path / "config.yaml").is_file()
    return False


def run_lock(run_dir):
    """Hold the run directory's lock while a protocol runs in it; a second process is refused."""
    run_dir = Path(run_dir)
    return locked(run_dir / LOCK_FILE, wait=False,
                  busy=lambda holder: f"{run_dir} is in use by another circuits run ({holder}); "
                                      f"wait for it to finish or use --out for another directory")


# ---------------------------------------------------------------- the run directory's files

def begin(cfg: Config, run_dir) -> float:
    """Check the directory (check_run_dir), then write run.json, config.yaml and a first meta.json;
    returns the start time."""
    run_dir = Path(run_dir)
    check_run_dir(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(run_dir)                  # left by a killed run: never read, now removed
    for name in (RUN_FILE, "config.yaml"):
        if (run_dir / name).exists() and not _readable(run_dir / name):
            print(f"circuits: {run_dir / name} is unreadable; writing it again", file=sys.stderr, flush=True)
    write_json(run_dir / RUN_FILE, {"fingerprint": run_fingerprint(cfg), "protocol": cfg.protocol,
                                    "config": fingerprint_config(to_dict(cfg))})
    write_config(run_dir, cfg)
    started = time.time()
    write_json(run_dir / "meta.json", meta(str(resolve_device(cfg.train.device)), started))
    return started


def _readable(path: Path) -> bool:
    try:
        if path.suffix == ".json":
            return isinstance(read_json(path), dict)
        load_yaml(path)
        return True
    except (OSError, ValueError, CircuitsError):
        return False


def finish(cfg: Config, run_dir, verdict: Verdict, histories: dict[str, list[dict]], started: float,
           networks: dict[str, Path] | None = None) -> Verdict:
    """Write metrics.csv, the networks the protocol took from the trained-circuit cache (name -> cache
    file: networks/NAME.safetensors), meta.json (with the end time) and verdict.json (last: its
    presence means done)."""
    run_dir = Path(run_dir)
    rows = [r for run, h in histories.items() for r in metric_rows(run, h)]
    write_metrics(run_dir, rows)
    weights.save_networks(run_dir, networks or {})
    ended = time.time()
    verdict.seconds = round(ended - started, 2)
    if not verdict.rationale:
        from circuits import registry                 # registry imports the protocols, which import us
        verdict.rationale = registry.get(cfg.protocol).rationale
    write_json(run_dir / "meta.json", meta(str(resolve_device(cfg.train.device)), started, ended))
    write_json(run_dir / "verdict.json", verdict.to_dict())
    return verdict
