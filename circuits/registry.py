"""Finds protocols: every module of the `protocols` package with `NAME`, `CLAIM` and `run`, and its
YAML presets beside it (`protocols/NAME.yaml`). The core never imports a protocol by name."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from circuits.config import load_yaml
from circuits.errors import CircuitsError


@dataclass
class Protocol:
    name: str
    claim: str
    module: ModuleType
    presets: dict
    check: list[dict]        # variants `circuits check` runs, e.g. [{arch: transformer}, {arch: mlp}]
    rationale: dict          # criterion -> one line naming the statement it tests (THEORY.md, paper, report)

    def run(self, cfg, run_dir):
        return self.module.run(cfg, run_dir)


def protocols() -> dict[str, Protocol]:
    pkg = importlib.import_module("protocols")
    out = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        mod = importlib.import_module(f"protocols.{info.name}")
        if not all(hasattr(mod, a) for a in ("NAME", "CLAIM", "run")):
            continue
        path = Path(mod.__file__).with_suffix(".yaml")
        if not path.exists():
            raise CircuitsError(f"protocol module protocols/{info.name}.py has no presets file {path.name} beside it")
        spec = load_yaml(path)
        out[mod.NAME] = Protocol(mod.NAME, mod.CLAIM, mod, spec.get("presets", {}), spec.get("check", [{}]),
                               spec.get("rationale", {}))
    return out


def get(name: str) -> Protocol:
    found = protocols()
    if name not in found:
        raise CircuitsError(f"unknown protocol {name!r} (known: {', '.join(found)})")
    return found[name]
