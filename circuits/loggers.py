"""Experiment loggers (`--log tensorboard`, `--log wandb`, config `train.log`), fed with the same
evaluation rows as metrics.csv by the one progress callback of `experiment.train_seed`.

  tensorboard  RUN/tensorboard/seed{N}/events.* (needs `tensorboard`: pip install 'circuits[log]')
  wandb        one W&B run per seed under RUN/wandb/, offline unless WANDB_MODE says otherwise (needs
               `wandb`); its config is the run's resolved config
Scalars are named split/metric (train/acc, test/loss, all/param_norm), against the training step.
"""
from __future__ import annotations

import os
from pathlib import Path

from circuits.errors import CircuitsError

KINDS = ("none", "tensorboard", "wandb")


def scalars(row: dict) -> dict[str, float]:
    """An evaluation row as {split/metric: value}, the names metrics.csv uses (split, metric)."""
    out = {}
    for key, value in row.items():
        if key in ("step", "phase", "time") or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        split, _, metric = key.partition("_") if key.split("_")[0] in ("train", "test") else ("all", "", key)
        out[f"{split}/{metric}"] = float(value)
    return out


class TensorBoard:
    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CircuitsError("--log tensorboard needs the tensorboard package: pip install 'circuits[log]'") from None
        self.writer = SummaryWriter(log_dir=str(folder))

    def log(self, step: int, row: dict) -> None:
        for name, value in scalars(row).items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, folder: Path, name: str, config: dict):
        try:
            import wandb
        except ImportError:
            raise CircuitsError("--log wandb needs the wandb package: pip install 'circuits[log]'") from None
        folder.mkdir(parents=True, exist_ok=True)
        mode = os.environ.get("WANDB_MODE", "offline")           # offline unless the user's environment says otherwise
        self.run = wandb.init(dir=str(folder), name=name, config=config, mode=mode, reinit="create_new")

    def log(self, step: int, row: dict) -> None:
        self.run.log(scalars(row), step=step)

    def close(self) -> None:
        self.run.finish()


def make_logger(kind: str, run_dir, seed: int, config: dict):
    """The logger of one seed of a run, or None for `none`."""
    if kind == "none":
        return None
    run_dir = Path(run_dir)
    if kind == "tensorboard":
        return TensorBoard(run_dir / "tensorboard" / f"seed{seed}")
    if kind == "wandb":
        return WandB(run_dir / "wandb", f"{run_dir.name}-seed{seed}", config)
    raise CircuitsError(f"--log must be one of {', '.join(KINDS)}, got {kind!r}")
