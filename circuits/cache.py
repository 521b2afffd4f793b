"""A cache of trained circuits: a network trained by a config from a seed (to a named stop rule) is
kept under $CIRCUITS_CACHE (default ~/.cache/circuits) and reused by later runs and protocols.

The key is a hash of everything that decides the trained weights: task, model, optimiser, step
budget, seed and the stop rule's name. Training into the cache checkpoints as it goes, so a killed
run resumes; the finished entry is written atomically and is never half-read.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from circuits.config import Config, to_dict
from circuits.experiment import Trained, build, setup
from circuits.progress import Bar
from circuits.store import cache_dir, config_hash, load_torch, save_torch, write_json
from circuits.train import Result, train


def cache_key(cfg: Config, seed: int, stop_name: str) -> str:
    d = to_dict(cfg)
    train_cfg = {k: v for k, v in d["train"].items() if k not in ("device", "threads", "checkpoint_every")}
    return config_hash({"task": d["task"], "model": d["model"], "optim": d["optim"], "train": train_cfg,
                        "seed": seed, "stop": stop_name})


def trained(cfg: Config, seed: int, stop=None, stop_name: str = "budget", label: str | None = None,
            quiet: bool = False) -> tuple[Trained, Path]:
    """The network `cfg` trains from `seed` until `stop` (named `stop_name`) or its budget, from the
    cache when it is there; returns it and its cache file."""
    device = setup(cfg)
    model, data = build(cfg, seed, device)
    folder = cache_dir() / cache_key(cfg, seed, stop_name)
    path = folder / "model.pt"
    if path.exists():
        entry = load_torch(path)
        model.load_state_dict(entry["model"])
        return Trained(seed, model, data, Result(**entry["result"])), path
    bar = Bar(label or f"train {cfg.model.arch} seed {seed} ({stop_name}) into the cache", quiet=quiet)
    result = train(model, data, cfg.optim, cfg.train, stop=stop, checkpoint=folder / "checkpoint.pt",
                   progress=bar, seed=seed)
    bar.close()
    write_json(folder / "config.json", {**to_dict(cfg), "seed": seed, "stop": stop_name})
    save_torch(path, {"model": {k: v.cpu() for k, v in model.state_dict().items()},
                      "result": dataclasses.asdict(result)})
    (folder / "checkpoint.pt").unlink(missing_ok=True)
    return Trained(seed, model, data, result), path
