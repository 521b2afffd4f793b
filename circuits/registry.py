"""Finds protocols: every module of the `protocols` package with `NAME`, `CLAIM` and `run`, and its
YAML presets beside it (`protocols/NAME.yaml`). The core never imports a protocol by name.

Names and claims are read from each module's source (`ast`, no import), so `circuits list` and
`--help` need neither torch nor the protocols; a protocol's module is imported when it is first used
(`Protocol.module`). The scan is done once per process."""
from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from circuits.config import load_yaml
from circuits.errors import CircuitsError


@dataclass
class Protocol:
    name: str
    claim: str
    module_name: str         # protocols.NAME, imported on first use
    presets: dict
    check: list[dict]        # variants `circuits check` runs, e.g. [{arch: transformer}, {arch: mlp}]
    rationale: dict          # criterion -> one line naming the statement it tests (THEORY.md, paper, report)
    loaded: ModuleType | None = field(default=None, repr=False)   # the module, once imported

    @property
    def module(self) -> ModuleType:
        if self.loaded is None:
            self.loaded = importlib.import_module(self.module_name)
        return self.loaded

    def run(self, cfg, run_dir):
        return self.module.run(cfg, run_dir)


def constants(path: Path) -> dict:
    """The module-level names assigned in a source file: string constants with their values, other
    names (functions, classes, computed values) with None."""
    out = {}
    for node in ast.parse(path.read_text(), str(path)).body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        value = getattr(node, "value", None)
        for t in targets:
            if isinstance(t, ast.Name):
                out[t.id] = value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = None
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update({(a.asname or a.name).split(".")[0]: None for a in node.names})
    return out


@functools.lru_cache(maxsize=None)
def _scan() -> tuple[Protocol, ...]:
    pkg = importlib.util.find_spec("protocols")               # where the package is, without importing it
    out = []
    for path in sorted(Path(next(iter(pkg.submodule_search_locations))).glob("*.py")):
        if path.name.startswith("_"):
            continue
        names = constants(path)
        if not all(a in names for a in ("NAME", "CLAIM", "run")):
            continue
        name, claim = names["NAME"], names["CLAIM"]
        if name is None or claim is None:
            mod = importlib.import_module(f"protocols.{path.stem}")      # not literal strings: import to read them
            name, claim = mod.NAME, mod.CLAIM
        yaml_path = path.with_suffix(".yaml")
        if not yaml_path.exists():
            raise CircuitsError(f"protocol module protocols/{path.name} has no presets file {yaml_path.name} beside it")
        spec = load_yaml(yaml_path)
        out.append(Protocol(name, claim, f"protocols.{path.stem}", spec.get("presets", {}), spec.get("check", [{}]),
                            spec.get("rationale", {})))
    return tuple(out)


def protocols() -> dict[str, Protocol]:
    """{name: Protocol} of every protocol (a new dict each call; the Protocols are shared)."""
    return {p.name: p for p in _scan()}


def get(name: str) -> Protocol:
    found = protocols()
    if name not in found:
        raise CircuitsError(f"unknown protocol {name!r} (known: {', '.join(found)})")
    return found[name]
