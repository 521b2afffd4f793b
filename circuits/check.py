"""The phenomena check behind `circuits check`: every protocol's check variants (the `check:` list of
its YAML) run with one preset and judged by the protocol's own written criteria.

A variant is a dict of config overrides (`arch`, or any `key: value` for --set), plus `gate: false`
and `why:` for a claim our runs did not confirm (run and reported, not gating), `name:` for a label
and `slow: true` for one too long for CI (run only with `circuits check --slow`). With workers > 1 the variants run side by side in worker processes, one torch thread each
(a protocol's own pmap then runs in-process: no pool inside a pool).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from circuits import api, registry
from circuits.parallel import pmap


@dataclass
class Variant:
    protocol: str
    claim: str
    name: str
    preset: str
    out: Path
    overrides: dict = field(default_factory=dict)
    gate: bool = True
    why: str = ""
    device: str | None = None


def variants(preset: str, out: Path, only: list[str] = (), device: str | None = None,
             slow: bool = False) -> list[Variant]:
    """The check variants of every protocol (of `only`), the slow ones only with slow=True."""
    found = []
    for proto in registry.protocols().values():
        if only and proto.name not in only:
            continue
        for v in proto.check:
            v = dict(v)
            gate, why, label = v.pop("gate", True), v.pop("why", ""), v.pop("name", None)
            if v.pop("slow", False) and not slow:
                continue
            name = "-".join([proto.name, label] if label else [proto.name, *map(str, v.values())])
            found.append(Variant(proto.name, proto.claim, name, preset, Path(out) / name, v, gate, why, device))
    return found


def summary(v: dict) -> str:
    """A verdict's first scalar numbers, for one line of output."""
    m = v.get("measured", {})
    keys = [k for k, x in m.items() if isinstance(x, (int, float)) and not isinstance(x, bool)][:6]
    return ", ".join(f"{k}={m[k]:.4g}" if isinstance(m[k], float) else f"{k}={m[k]}" for k in keys)


def run_variant(var: Variant) -> dict:
    """Run one variant fresh into its directory; its row of check.json."""
    t0 = time.perf_counter()
    sets = [f"{k}={x}" for k, x in var.overrides.items() if k != "arch"]
    v = api.run_protocol(var.protocol, var.preset, out=var.out, fresh=True, device=var.device,
                         arch=var.overrides.get("arch"), overrides=sets)
    return {"check": var.name, "protocol": var.protocol, "claim": var.claim, "status": v["status"], "gate": var.gate,
            "why_not_gating": var.why or None, "numbers": summary(v), "seconds": round(time.perf_counter() - t0, 1),
            "run_dir": v["run_dir"]}


def run_all(found: list[Variant], workers: int = 1, on_row=None) -> list[dict]:
    """Every variant's row, in the order given; on_row(row) as each finishes."""
    if workers <= 1:
        rows = []
        for var in found:
            rows.append(run_variant(var))
            if on_row:
                on_row(rows[-1])
        return rows
    return pmap(run_variant, found, workers, on_result=on_row)
