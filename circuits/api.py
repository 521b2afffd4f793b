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
    return run_config(cfg, run_dir_for(cfg, out, fresh))


def run_dir_for(cfg: config.Config, out: str | Path | None = None, fresh: bool = False) -> Path:
    """`out`, or the default run directory of cfg; emptied first with fresh (else a re-run resumes)."""
    run_dir = Path(out) if out else default_out(cfg)
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    return run_dir


def run_config(cfg: config.Config, run_dir) -> dict:
    """Run a resolved config into run_dir, or read back its verdict if that run finished already."""
    run_dir = Path(run_dir)
    if is_done(cfg, run_dir):
        verdict = read_json(run_dir / "verdict.json")
    else:
        verdict = registry.get(cfg.protocol).run(cfg, run_dir).to_dict()
    return {**verdict, "run_dir": str(run_dir)}


def is_done(cfg: config.Config, run_dir) -> bool:
    """True when run_dir holds a verdict of this very config (verdict.json is written last)."""
    run_dir = Path(run_dir)
    if not (run_dir / "verdict.json").exists() or not (run_dir / "config.yaml").exists():
        return False
    return config_hash(config.load_yaml(run_dir / "config.yaml")) == config_hash(config.to_dict(cfg))
