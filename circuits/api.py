"""The Python entry point shared by the CLI and notebooks."""
from __future__ import annotations

import shutil
from pathlib import Path

from circuits import config, registry
from circuits.store import config_hash, read_json


def resolve(protocol: str, preset: str = "quick", **kw) -> config.Config:
    proto = registry.get(protocol)
    return config.resolve(proto.name, proto.presets, preset, **kw)


def default_out(cfg: config.Config) -> Path:
    """runs/PROTOCOL/PRESET-ARCH-HASH: the same config lands in the same folder, so re-running a
    killed command resumes it and re-running a finished one returns its verdict."""
    return Path("runs") / cfg.protocol / f"{cfg.preset}-{cfg.model.arch}-{config_hash(config.to_dict(cfg))[:8]}"


def run_protocol(protocol: str, preset: str = "quick", *, out: str | Path | None = None, fresh: bool = False,
                 arch: str | None = None, p: int | None = None, frac: float | None = None,
                 seeds: int | None = None, device: str | None = None, config_file: str | None = None,
                 overrides: list[str] = ()) -> dict:
    """Resolve the config, run the protocol into its run directory, return the verdict as a dict."""
    cfg = resolve(protocol, preset, arch=arch, p=p, frac=frac, seeds=seeds, device=device,
                  config_file=config_file, overrides=list(overrides))
    run_dir = Path(out) if out else default_out(cfg)
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    done = run_dir / "verdict.json"
    if done.exists() and (run_dir / "config.yaml").exists() and _same_config(run_dir, cfg):
        verdict = read_json(done)
    else:
        verdict = registry.get(protocol).run(cfg, run_dir).to_dict()
    return {**verdict, "run_dir": str(run_dir)}


def _same_config(run_dir: Path, cfg: config.Config) -> bool:
    saved = config.load_yaml(run_dir / "config.yaml")
    return config_hash(saved) == config_hash(config.to_dict(cfg))
