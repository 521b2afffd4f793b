"""What every protocol does around training: build the task and model for a seed, train with a
checkpoint in the run directory, and write the run directory's files at the end."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from circuits.config import Config
from circuits.detect import Verdict
from circuits.models import build_model
from circuits.progress import Bar
from circuits.store import meta, metric_rows, remove_stale_temps, write_config, write_json, write_metrics
from circuits.tasks import Dataset, make_dataset
from circuits.train import Phase, Result, resolve_device, train


@dataclass
class Trained:
    seed: int
    model: torch.nn.Module
    data: Dataset
    result: Result


def setup(cfg: Config) -> torch.device:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    return resolve_device(cfg.train.device)


def build(cfg: Config, seed: int, device) -> tuple[torch.nn.Module, Dataset]:
    """The task (split by task.split_seed) and a model initialised from `seed`."""
    data = make_dataset(cfg.task).to(device)
    torch.manual_seed(seed)
    model = build_model(cfg.model, data.d_vocab, data.n_ctx).to(device)
    return model, data


def train_seed(cfg: Config, seed: int, run_dir, *, stop=None, phases: list[Phase] | None = None,
               extra_metrics=(), quiet: bool = False, label: str | None = None) -> Trained:
    """Train one seed of `cfg`, checkpointing into run_dir/seed{seed}/ (a re-run resumes there)."""
    device = setup(cfg)
    model, data = build(cfg, seed, device)
    bar = Bar(label or f"{cfg.protocol} {cfg.model.arch} seed {seed}", quiet=quiet)
    result = train(model, data, cfg.optim, cfg.train, phases=phases, stop=stop, extra_metrics=extra_metrics,
                   checkpoint=Path(run_dir) / f"seed{seed}" / "checkpoint.pt", progress=bar, seed=seed)
    bar.close()
    return Trained(seed, model, data, result)


def begin(cfg: Config, run_dir) -> float:
    """Write config.yaml and a first meta.json; returns the start time."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(run_dir)                  # left by a killed run: never read, now removed
    write_config(run_dir, cfg)
    started = time.time()
    write_json(run_dir / "meta.json", meta(str(resolve_device(cfg.train.device)), started))
    return started


def finish(cfg: Config, run_dir, verdict: Verdict, histories: dict[str, list[dict]], started: float) -> Verdict:
    """Write metrics.csv, meta.json (with the end time) and verdict.json (last: its presence means done)."""
    run_dir = Path(run_dir)
    rows = [r for run, h in histories.items() for r in metric_rows(run, h)]
    write_metrics(run_dir, rows)
    ended = time.time()
    verdict.seconds = round(ended - started, 2)
    if not verdict.rationale:
        from circuits import registry                 # registry imports the protocols, which import us
        verdict.rationale = registry.get(cfg.protocol).rationale
    write_json(run_dir / "meta.json", meta(str(resolve_device(cfg.train.device)), started, ended))
    write_json(run_dir / "verdict.json", verdict.to_dict())
    return verdict
