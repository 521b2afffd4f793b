"""`circuits.load(run_dir)`: what a run trained, back in Python.

    run = circuits.load("runs/grokking/quick-mlp-...")
    run.config, run.verdict, run.metrics          # Config, dict, a long pandas DataFrame
    model = run.model(seed=0)                     # in eval mode; model.plain(tokens) for all positions
    run.data.tokens[run.data.test_idx]            # the task with the run's split
    [(step, m) for step, m in run.trajectory(0)]  # snapshots, with train.save_every
    run.networks, run.network("seed0-wd1-D390-s0")  # the networks of a cache-based protocol (ungrokking, ...)

Weights are read from safetensors (`seed{N}/model.safetensors`, `networks/NAME.safetensors`:
`circuits.weights`), or, for a run
written before they existed, from its finished checkpoint with torch's weights-only loader: never
pickle code. A directory whose config.yaml is not the config its run.json records is refused.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from circuits import weights
from circuits.config import Config, from_dict, load_yaml
from circuits.errors import CircuitsError
from circuits.experiment import RUN_FILE, run_fingerprint, seed_checkpoint
from circuits.models import build_model
from circuits.store import load_torch, read_json
from circuits.tasks import Dataset, make_dataset


@dataclass
class Run:
    run_dir: Path
    config: Config
    data: Dataset
    verdict: dict | None                  # None while the run has not finished
    metrics: object                       # pandas DataFrame: run, step, split, metric, value
    seeds: list[int] = field(default_factory=list)   # seeds with trained weights on disk
    networks: list[str] = field(default_factory=list)  # names in networks/ (protocols on the cache)

    def _build(self, state: dict) -> torch.nn.Module:
        model = build_model(self.config.model, self.data.d_vocab, self.data.n_ctx)
        model.load_state_dict(state)
        return model.eval()

    def model(self, seed: int | None = None) -> torch.nn.Module:
        """The final network of a seed (default: the first), in eval mode."""
        seed = self.seeds[0] if seed is None and self.seeds else seed
        if seed not in self.seeds:
            raise CircuitsError(f"{self.run_dir} has no trained weights for seed {seed} (has: {self.seeds or 'none'})")
        return self._build(final_state(self.run_dir, seed))

    def network(self, name: str) -> torch.nn.Module:
        """A network the protocol took from the trained-circuit cache (its name as in metrics.csv), in
        eval mode. Every one has the run's model config; its data (subset, labels) is the protocol's."""
        if name not in self.networks:
            near = difflib.get_close_matches(name, self.networks, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f" (it has {len(self.networks)})"
            raise CircuitsError(f"{self.run_dir} has no network {name!r}{hint}")
        return self._build(weights.load_weights(weights.network_path(self.run_dir, name)))

    def trajectory(self, seed: int | None = None):
        """(step, model) for each snapshot of a seed (train.save_every), loaded one at a time."""
        seed = self.seeds[0] if seed is None and self.seeds else seed
        for step, path in weights.trajectory(Path(self.run_dir) / f"seed{seed}"):
            yield step, self._build(weights.load_weights(path))


def final_state(run_dir, seed: int) -> dict:
    path = weights.final_path(Path(run_dir) / f"seed{seed}")
    if path.exists():
        return weights.load_weights(path)
    ck = load_torch(seed_checkpoint(run_dir, seed))          # weights only; a run from before safetensors
    return ck["model"]


def has_weights(run_dir, seed: int) -> bool:
    return weights.final_path(Path(run_dir) / f"seed{seed}").exists() or seed_checkpoint(run_dir, seed).exists()


def load(run_dir) -> Run:
    """The run in run_dir: config, dataset, verdict, metrics and (per seed) its trained network."""
    import pandas as pd

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CircuitsError(f"{run_dir} is not a circuits run directory (no config.yaml)")
    cfg = from_dict(Config, load_yaml(run_dir / "config.yaml"))
    rec = read_json(run_dir / RUN_FILE) if (run_dir / RUN_FILE).is_file() else None
    if rec is not None and rec.get("fingerprint") != run_fingerprint(cfg):
        raise CircuitsError(f"{run_dir}: config.yaml is not the config its run.json records; not loading it")
    verdict = read_json(run_dir / "verdict.json") if (run_dir / "verdict.json").is_file() else None
    metrics = pd.read_csv(run_dir / "metrics.csv") if (run_dir / "metrics.csv").is_file() else pd.DataFrame(
        columns=["run", "step", "split", "metric", "value"])
    return Run(run_dir, cfg, make_dataset(cfg.task), verdict, metrics,
               [s for s in cfg.seeds if has_weights(run_dir, s)], weights.networks(run_dir))
