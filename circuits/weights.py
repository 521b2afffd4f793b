"""Trained networks as outputs: weights as safetensors (tensors only: loading runs no code).

A run directory holds, per seed, `seed{N}/model.safetensors` (the final weights) and, with
`train.save_every: K`, `seed{N}/trajectory/step{S:07d}.safetensors` every K steps from step 0, so
progress measures (Nanda et al. 2023) can be computed after the fact. The file's metadata names
the architecture and step; `circuits.load` rebuilds the model from the run's config.yaml.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from circuits.errors import CircuitsError
from circuits.store import atomic_write_bytes

FINAL = "model.safetensors"
TRAJECTORY = "trajectory"
STEP_FILE = re.compile(r"step(\d+)\.safetensors$")


def save_weights(model: torch.nn.Module, path, **metadata) -> Path:
    """Write the model's parameters and buffers to path (atomically); metadata: str -> str."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write_bytes(path, save(tensors, metadata={k: str(v) for k, v in metadata.items()}))


def load_weights(path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file; a CircuitsError naming the file if it cannot be read."""
    try:
        return load(Path(path).read_bytes())
    except (OSError, SafetensorError, ValueError) as e:
        raise CircuitsError(f"{path} is not a readable safetensors file ({' '.join(str(e).split())})") from None


def final_path(seed_dir) -> Path:
    return Path(seed_dir) / FINAL


def snapshot_path(seed_dir, step: int) -> Path:
    return Path(seed_dir) / TRAJECTORY / f"step{step:07d}.safetensors"


def trajectory(seed_dir) -> list[tuple[int, Path]]:
    """[(step, path)] of a seed's snapshots, in step order."""
    folder = Path(seed_dir) / TRAJECTORY
    found = [(int(m.group(1)), p) for p in folder.glob("step*.safetensors") if (m := STEP_FILE.search(p.name))]
    return sorted(found)
