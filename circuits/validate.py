"""Checking a resolved config before a run starts (`validate_run`): the protocol's params and
criteria against its known keys and the kinds of their values, the sweep's axes, memory, and the
protocol's own `validate(cfg)`. Each failure is one CircuitsError line (the CLI's exit code 2)."""
from __future__ import annotations

import itertools
import math

from circuits.config import ALIASES, FIXED, Config, deep_merge, from_dict, nest, to_dict
from circuits.errors import unknown_key
from circuits.errors import CircuitsError


def check_like(value, ref, path: str) -> None:
    """`value` must have the kind of `ref` (a protocol's default or a preset's value): a bool stays a
    bool, a number a finite number (an integer where ref is one), a string a string, a list a list
    (of numbers where ref's items are numbers), a mapping a mapping (its known keys checked alike).
    ref None takes anything."""
    if ref is None:
        return
    if isinstance(ref, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(ref, (int, float)):
        ok, want = _is_number(value), "a finite number"
        if ok and isinstance(ref, int) and value != int(value):
            ok, want = False, "an integer"
    elif isinstance(ref, str):
        ok, want = isinstance(value, str), "a string"
    elif isinstance(ref, (list, tuple)):
        numbers = _numbers(ref)
        ok = isinstance(value, (list, tuple)) and (not numbers or all(_is_number(v) for v in value))
        want = "a list of numbers, e.g. [0.3, 0.5]" if numbers else "a list"
    elif isinstance(ref, dict):
        ok, want = isinstance(value, dict), "a mapping"
        if ok:
            for k in value:
                if k in ref:
                    check_like(value[k], ref[k], f"{path}.{k}")
    else:
        return
    if not ok:
        raise CircuitsError(f"bad value for {path}: {value!r} (expected {want})")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def known_fields(proto, what: str) -> dict[str, tuple]:
    """A protocol's known `params` or `criteria` keys -> (ref, nullable): ref is the value a given
    value's kind is checked against, the protocol module's default (DEFAULTS / CRITERIA) or else the
    first value a preset (or a preset's by_arch block) gives, widened to a plain list where one
    preset's list of numbers is another's list with a null in it (end_states [0.05, 0.99] and
    [0.1, null]); nullable where a default or a preset is None."""
    module = getattr(proto.module, "DEFAULTS" if what == "params" else "CRITERIA", None) or {}
    out = {k: (v, v is None) for k, v in module.items()}
    for preset in proto.presets.values():
        preset = preset or {}
        for block in [preset] + [b or {} for b in (preset.get("by_arch") or {}).values()]:
            for k, v in (block.get(what) or {}).items():
                ref, nullable = out.get(k, (None, False))
                if ref is None or (_numbers(ref) and isinstance(v, (list, tuple)) and not _numbers(v)):
                    ref = v
                out[k] = (ref, nullable or v is None)
    return out


def _numbers(x) -> bool:
    """A non-empty list of numbers (check_like's strictest kind of list)."""
    return isinstance(x, (list, tuple)) and bool(x) and all(_is_number(v) for v in x)


def check_protocol_fields(cfg: Config, proto, what: str) -> None:
    """cfg.params or cfg.criteria against the protocol's known keys (`known_fields`): an unknown key
    (with the nearest known one) or a value of the wrong kind is a CircuitsError."""
    known = known_fields(proto, what)
    for key, value in getattr(cfg, what).items():
        if key not in known:
            if not known:
                raise CircuitsError(f"unknown config key '{what}.{key}' (protocol {proto.name} takes no {what})")
            raise unknown_key(f"{what}.{key}", list(known), f"{what}.")
        ref, nullable = known[key]
        if not (value is None and nullable):
            check_like(value, ref, f"{what}.{key}")


def sweep_axes(cfg: Config) -> dict[str, list]:
    """cfg.sweep as axes {key: [values]}; refuses the keys a sweep point cannot vary (seeds: use
    --seeds; protocol, preset, sweep) and a nested mapping where a list of values belongs."""
    axes = {}
    for key, values in cfg.sweep.items():
        top = ALIASES.get(str(key).split(".")[0], str(key).split(".")[0])
        if top == "seeds":
            raise CircuitsError("--sweep seeds=... would be replaced by the run's seeds; use --seeds N "
                                "(seeds 0..N-1) or --set seeds=[3,4]")
        if top in FIXED or top == "sweep":
            raise CircuitsError(f"--sweep cannot vary {top}; run one command per {top}")
        if isinstance(values, dict):
            raise CircuitsError(f"sweep.{key} must be a list of values, e.g. --sweep task.frac=0.3,0.5; got {values!r}")
        axes[key] = list(values) if isinstance(values, (list, tuple)) else [values]
    return axes


def validate_run(cfg: Config, proto=None) -> None:
    """Every check of a resolved config that must pass before a run directory is chosen or made:
    the protocol's params and criteria (known keys, values of the right kind), whether the task and
    model fit in memory (tasks.check_fits), the protocol module's own `validate(cfg)` where it has
    one, and the same for every point of cfg.sweep.
    proto: cfg.protocol's registry.Protocol, if at hand (else looked up)."""
    from circuits import registry, tasks       # imported when a run is checked: tasks imports torch

    proto = proto or registry.get(cfg.protocol)
    axes = sweep_axes(cfg)
    base = to_dict(cfg)
    base["sweep"] = {}
    for combo in itertools.product(*axes.values()):   # one config per grid point (the seeds change nothing here)
        d = base
        for key, value in zip(axes, combo):
            d = deep_merge(d, nest(key, value))
        point = from_dict(Config, d)
        check_protocol_fields(point, proto, "params")
        check_protocol_fields(point, proto, "criteria")
        tasks.check_fits(point.task, point.model, point.optim.batch_size, point.train.device)
        own = getattr(proto.module, "validate", None)   # a protocol's own checks, if it has them: validate(cfg)
        if callable(own):
            own(point)


# Range checks a protocol's own `validate(cfg)` uses on its params (their kinds are checked above).

def need(ok: bool, message: str) -> None:
    if not ok:
        raise CircuitsError(message)


def check_sizes(xs, path: str, n_all: int, most: int | None = None, most_what: str = "") -> None:
    """Training-set sizes as `circuits.tasks.sizes_from` reads them: a non-empty list of fractions of
    all n_all inputs (0 < x <= 1) or whole counts (x > 1), each giving between 1 and `most` inputs
    (default n_all; most_what says what bounds it). A size outside is refused, never clamped."""
    most = n_all if most is None else most
    need(isinstance(xs, (list, tuple)) and len(xs) > 0, f"{path} must be a non-empty list of sizes, got {xs!r}")
    for x in xs:
        need(x > 0, f"{path}: a size must be > 0 (a fraction of all {n_all} inputs, or a count), got {x}")
        need(x <= 1 or x == int(x), f"{path}: a size above 1 is a count and must be whole, got {x}")
        n = int(round(x * n_all)) if x <= 1 else int(x)
        need(1 <= n <= most, f"{path}: size {x} gives {n} inputs; it must give 1 to {most}"
                             + (f" ({most_what})" if most_what else ""))


def check_optional_bool(value, path: str) -> None:
    """true, false or null (null: the protocol decides, e.g. stacking on CUDA only)."""
    need(value is None or isinstance(value, bool), f"bad value for {path}: {value!r} (expected true, false or null)")


def check_seed_list(xs, path: str) -> None:
    """A non-empty list of distinct integer seeds >= 0."""
    need(isinstance(xs, (list, tuple)) and len(xs) > 0 and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                               for s in xs),
         f"{path} must be a non-empty list of integers >= 0, got {xs!r}")
    need(len(set(xs)) == len(xs), f"{path} must not repeat a seed, got {xs!r}")


def check_at_least(value, path: str, low: float, strict: bool = False) -> None:
    """value (a number, or each number of a non-empty list) > low (strict) or >= low."""
    values = value if isinstance(value, (list, tuple)) else [value]
    need(len(values) > 0, f"{path} must not be empty")
    for v in values:
        need(v > low if strict else v >= low, f"{path} must be {'>' if strict else '>='} {low:g}, got {v!r}")
