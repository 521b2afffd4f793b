"""Trained networks as outputs: weights as safetensors (tensors only: loading runs no code).

A run directory holds, per seed, `seed{N}/model.safetensors` (the final weights) and, with
`train.save_every: K`, `seed{N}/trajectory/step{S:07d}.safetensors` every K steps from step 0, so
progress measures (Nanda et al. 2023) can be computed after the fact. Protocols whose networks live
in the trained-circuit cache (ungrokking, efficiency, mixture, semigrokking, dcrit) write each one
they used as `networks/{name}.safetensors` (names as in metrics.csv). The file's metadata names
the architecture and step; `circuits.load` rebuilds the model from the run's config.yaml.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from circuits.errors import CircuitsError
from circuits.store import atomic_write_bytes, load_torch

FINAL = "model.safetensors"
TRAJECTORY = "trajectory"
NETWORKS = "networks"
STEP_FILE = re.compile(r"step(\d+)\.safetensors$")


def save_weights(model: torch.nn.Module, path, **metadata) -> Path:
    """Write the model's parameters and buffers to path (atomically); metadata: str -> str."""
    return save_state(model.state_dict(), path, **metadata)


def save_state(state: dict[str, torch.Tensor], path, **metadata) -> Path:
    """Write a state dict to path (atomically); metadata: str -> str."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
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


def network_path(run_dir, name: str) -> Path:
    return Path(run_dir) / NETWORKS / f"{name}.safetensors"


def save_networks(run_dir, sources: dict[str, Path]) -> list[str]:
    """Copy each network a protocol used out of the trained-circuit cache into the run directory:
    sources maps a name to a cache entry or finished checkpoint (its "model" state, read weights-only).
    One whose file is gone (a cache cleared meanwhile) is skipped; returns the names written."""
    written = []
    for name, src in sources.items():
        if not Path(src).is_file():
            continue
        entry = load_torch(src)
        save_state(entry["model"], network_path(run_dir, name), name=name,
                   step=(entry.get("result") or {}).get("step", ""))
        written.append(name)
    return written


def networks(run_dir) -> list[str]:
    """The names of the networks in run_dir/networks, sorted."""
    return sorted(p.name[: -len(".safetensors")] for p in (Path(run_dir) / NETWORKS).glob("*.safetensors"))
