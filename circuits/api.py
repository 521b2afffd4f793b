"""The Python entry point shared by the CLI and notebooks."""
from __future__ import annotations

import shutil
from pathlib import Path

from circuits import config, registry, validate
from circuits.errors import CircuitsError
from circuits.experiment import (LOCK_FILE, check_run_dir, is_run_dir, recorded_config, run_fingerprint, run_lock,
                                 torch_threads)
from circuits.store import config_hash, plain, read_json


def resolve(protocol: str, preset: str | None = "quick", **kw) -> config.Config:
    proto = registry.get(protocol)
    return config.resolve(proto.name, proto.presets, preset, **kw)


def default_out(cfg: config.Config) -> Path:
    """runs/PROTOCOL/PRESET-ARCH-HASH: the same config lands in the same folder, so re-running a
    killed command resumes it and re-running a finished one returns its verdict."""
    return Path("runs") / cfg.protocol / f"{cfg.preset}-{cfg.model.arch}-{config_hash(config.to_dict(cfg))[:8]}"


def run_protocol(protocol: str, preset: str | None = "quick", *, out: str | Path | None = None, fresh: bool = False,
                 arch: str | None = None, p: int | None = None, frac: float | None = None,
                 seeds: int | None = None, device: str | None = None, config_file: str | None = None,
                 overrides: list[str] = ()) -> dict:
    """Resolve the config, run the protocol into its run directory, return the verdict as a dict."""
    cfg = resolve(protocol, preset, arch=arch, p=p, frac=frac, seeds=seeds, device=device,
                  config_file=config_file, overrides=list(overrides))
    validate.validate_run(cfg)                # every check before a run directory is chosen or made
    return run_config(cfg, run_dir_for(cfg, out, fresh))


def run_dir_for(cfg: config.Config, out: str | Path | None = None, fresh: bool = False) -> Path:
    """`out`, or the default run directory of cfg. With fresh, an existing one is deleted first
    (else a re-run resumes), but only if it is recognisably a circuits run directory that no run
    is using. Refused (CircuitsError): an empty --out, the current, home or root directory or one
    above them, and an existing file."""
    run_dir = default_out(cfg) if out is None else safe_out(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise CircuitsError(f"--out {run_dir} is an existing file, not a directory")
    if fresh and run_dir.exists():
        delete_run_dir(run_dir)
    return run_dir


def safe_out(out) -> Path:
    """`out` as a path, unless it is empty or names the current, home or root directory (or a
    directory above one of them): those are never run directories."""
    if not str(out).strip() or str(out).strip() in (".", "./"):
        raise CircuitsError(f"--out {str(out)!r} would be the current directory; name a run directory")
    path = Path(out).expanduser()
    resolved = path.resolve()
    for what, special in (("the current directory", Path.cwd().resolve()), ("your home directory", _home()),
                          ("the root directory", Path(resolved.anchor))):
        if resolved == special or resolved in special.parents:
            raise CircuitsError(f"--out {out} is {what}" + ("" if resolved == special else " or above it")
                                + "; name a run directory")
    return path


def _home() -> Path:
    try:
        return Path.home().resolve()
    except (RuntimeError, KeyError):            # no home directory known: only cwd and root are guarded
        return Path.cwd().resolve()


def delete_run_dir(run_dir: Path) -> None:
    """--fresh: delete run_dir if it is a circuits run directory that no run is using."""
    if not is_run_dir(run_dir):
        if not [e for e in run_dir.iterdir() if e.name != LOCK_FILE]:
            return                                       # empty (but for a lock file): nothing to delete
        raise CircuitsError(f"--fresh: {run_dir} is not a circuits run directory (no run.json, config.yaml "
                            f"with meta.json, or sweep.json of ours); not deleting it")
    with run_lock(run_dir):
        shutil.rmtree(run_dir)


def run_config(cfg: config.Config, run_dir) -> dict:
    """Run a resolved config into run_dir, or read back its verdict if that run finished already.
    A directory holding a run of another config is refused before anything is written; the
    directory is locked while the protocol runs; torch's thread count is restored afterwards."""
    run_dir = Path(run_dir)
    check_run_dir(cfg, run_dir)
    with run_lock(run_dir):
        verdict = read_verdict(cfg, run_dir)
        if verdict is None:
            with torch_threads():
                verdict = registry.get(cfg.protocol).run(cfg, run_dir).to_dict()
    return {**plain(verdict), "run_dir": str(run_dir)}


def read_verdict(cfg: config.Config, run_dir) -> dict | None:
    """The verdict run_dir holds for this very config, or None (none, another config, unreadable)."""
    run_dir = Path(run_dir)
    old = recorded_config(run_dir)
    if old is None or config_hash(old) != run_fingerprint(cfg) or not (run_dir / "verdict.json").is_file():
        return None
    try:
        verdict = read_json(run_dir / "verdict.json")
    except (OSError, ValueError):
        return None
    return verdict if isinstance(verdict, dict) and "status" in verdict else None


def is_done(cfg: config.Config, run_dir) -> bool:
    """True when run_dir holds a readable verdict of this very config (verdict.json is written last)."""
    return read_verdict(cfg, run_dir) is not None
