"""Typed configs: dataclasses with canonical defaults (THEORY.md), YAML presets, `key=value` overrides.

Merge order, later wins: dataclass defaults (the canonical setup) <- preset <- preset.by_arch[arch]
<- --config FILE <- --arch/--p/--frac <- --set key=value.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, get_type_hints

import yaml

from circuits.errors import CircuitsError

ARCHS = ("transformer", "mlp", "rnn", "lstm", "gru", "birnn")
OPS = ("+", "-", "*", "/")
LAYOUTS = ("xy=", "xopy=", "xy")
OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop", "nadam")


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise CircuitsError(msg)


@dataclass
class TaskConfig:
    op: str = "+"              # (x op y) mod p
    p: int = 113
    k: int = 2                 # number of operands (K-operand addition for k > 2)
    layout: str = "xy="        # tokens [x, y, =] (canonical), [x, op, y, =] or [x, y]
    frac: float = 0.3          # training fraction of all pairs
    split_seed: int = 0        # shuffle all pairs with this seed, first `frac` is train
    random_labels: bool = False  # every pair gets a fixed random label (memorisation only)

    def __post_init__(self):
        _check(self.op in OPS, f"task.op must be one of {' '.join(OPS)}, got {self.op!r}")
        _check(self.layout in LAYOUTS, f"task.layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        _check(isinstance(self.p, int) and self.p >= 2, f"task.p must be an integer >= 2, got {self.p!r}")
        _check(isinstance(self.k, int) and self.k >= 2, f"task.k must be an integer >= 2, got {self.k!r}")
        _check(0.0 < self.frac <= 1.0, f"task.frac must be in (0, 1], got {self.frac}")
        _check(self.op != "/" or _is_prime(self.p), f"division needs a prime p, got p={self.p}")
        _check(self.k == 2 or self.op == "+", "K-operand tasks (k > 2) support op '+' only")


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


@dataclass
class ModelConfig:
    arch: str = "transformer"
    # transformer (canonical: Nanda et al. 2023)
    n_layers: int = 1
    d_model: int = 128         # also the token-embedding width of the MLP and recurrent models
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512           # transformer MLP width; also the MLP model's hidden width
    act: str = "relu"
    layernorm: bool = False
    fast: bool = True          # last-position fast path (same logits to 1e-5)
    # mlp model: per-token embeddings concatenated -> mlp_depth hidden layers of d_mlp
    mlp_depth: int = 1
    # recurrent models
    hidden: int = 256
    rnn_layers: int = 2
    bidirectional: bool = False  # birnn is rnn with this on
    dropout: float = 0.0

    def __post_init__(self):
        _check(self.arch in ARCHS, f"model.arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        _check(self.act in ("relu", "gelu"), f"model.act must be relu or gelu, got {self.act!r}")
        for name in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "mlp_depth", "hidden", "rnn_layers"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, f"model.{name} must be an integer >= 1, got {v!r}")
        _check(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 1.0
    momentum: float = 0.9      # sgd / rmsprop
    nesterov: bool = True      # sgd
    warmup: int = 10           # lr * min(step / warmup, 1), step counted from 0 (Nanda et al.)
    batch_size: int = 0        # 0: full batch
    # regularisers of the student reports (report 003, Fig. 4); the defaults leave training unchanged
    decay_to_init: bool = False  # adamw only: decoupled decay towards the weights at the start of training,
                                 # theta -= lr_t * weight_decay * (theta - theta_0), instead of towards zero
    grad_noise: float = 0.0    # std of Gaussian noise added to every gradient before each step ("update noise")
    weight_noise: float = 0.0  # std of Gaussian noise added to every weight after each step

    def __post_init__(self):
        _check(self.name in OPTIMIZERS, f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        _check(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        _check(self.warmup >= 0 and self.batch_size >= 0, "optim.warmup and optim.batch_size must be >= 0")
        _check(not self.decay_to_init or self.name == "adamw",
               f"optim.decay_to_init needs optim.name adamw (decoupled decay), got {self.name!r}")
        for name in ("grad_noise", "weight_noise"):
            v = getattr(self, name)
            _check(math.isfinite(v) and v >= 0, f"optim.{name} must be a finite number >= 0, got {v}")
        self.betas = tuple(float(b) for b in self.betas)


@dataclass
class TrainConfig:
    steps: int = 40_000        # step budget
    eval_every: int = 100
    checkpoint_every: int = 2_000
    device: str = "auto"       # auto | cpu | cuda
    threads: int = 0           # torch threads; 0: torch's default

    def __post_init__(self):
        _check(self.steps >= 1 and self.eval_every >= 1 and self.checkpoint_every >= 1,
               "train.steps, train.eval_every and train.checkpoint_every must be >= 1")
        _check(self.device in ("auto", "cpu", "cuda"), f"train.device must be auto, cpu or cuda, got {self.device!r}")


@dataclass
class Config:
    protocol: str = "grokking"
    preset: str = "quick"
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seeds: list[int] = field(default_factory=lambda: [0])
    criteria: dict[str, float] = field(default_factory=dict)   # the protocol's written verdict criteria
    params: dict[str, Any] = field(default_factory=dict)       # the protocol's own knobs
    sweep: dict[str, list] = field(default_factory=dict)       # a grid: {"task.frac": [0.3, 0.5]} (circuits.sweep)

    def __post_init__(self):
        _check(len(self.seeds) >= 1 and all(isinstance(s, int) for s in self.seeds), "seeds must be a non-empty list of integers")


# ---------------------------------------------------------------- building from dicts

def from_dict(cls, d: dict, where: str = ""):
    """Build dataclass `cls` from a nested dict; an unknown key is a CircuitsError."""
    if not isinstance(d, dict):
        raise CircuitsError(f"{where or 'config'} must be a mapping, got {d!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in d.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise CircuitsError(f"unknown config key {path!r} (known: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(hints[key], value, path)
    return cls(**kwargs)


def _coerce(tp, value, path):
    if is_dataclass(tp):
        return from_dict(tp, value, path)
    origin = getattr(tp, "__origin__", None)
    try:
        if tp is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if tp is int:
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
        if origin is tuple:
            return tuple(float(v) for v in value)
        if origin is list:
            (item,) = tp.__args__
            return [_coerce(item, v, path) for v in (value if isinstance(value, (list, tuple)) else [value])]
    except (TypeError, ValueError):
        raise CircuitsError(f"bad value for {path}: {value!r} (expected {getattr(tp, '__name__', tp)})") from None
    return value


def to_dict(cfg) -> dict:
    d = dataclasses.asdict(cfg)
    d["optim"]["betas"] = list(d["optim"]["betas"])
    return d


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


ALIASES = {"data": "task"}   # `--sweep data.frac=...` reads as task.frac


def nest(key: str, value) -> dict:
    """'model.d_model', 64 -> {'model': {'d_model': 64}}."""
    parts = key.strip().split(".")
    parts[0] = ALIASES.get(parts[0], parts[0])
    if not all(parts):
        raise CircuitsError(f"empty part in the key {key!r}")
    out = value
    for part in reversed(parts):
        out = {part: out}
    return out


def parse_override(item: str) -> dict:
    """'model.d_model=64' -> {'model': {'d_model': 64}}; the value is read as YAML."""
    if "=" not in item:
        raise CircuitsError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    return nest(key, read_value(raw))


def read_value(raw: str):
    try:
        return yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return raw


def load_yaml(path) -> dict:
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise CircuitsError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise CircuitsError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise CircuitsError(f"config file {path} must hold a mapping")
    return data


def resolve(protocol: str, presets: dict, preset: str = "quick", *, arch: str | None = None,
            config_file: str | None = None, p: int | None = None, frac: float | None = None,
            seeds: int | None = None, device: str | None = None, overrides: list[str] = ()) -> Config:
    """The fully resolved config of one protocol run (see the module docstring for the order)."""
    if preset not in presets:
        raise CircuitsError(f"protocol {protocol!r} has no preset {preset!r} (has: {', '.join(presets)})")
    base = dict(presets[preset] or {})
    by_arch = base.pop("by_arch", {}) or {}
    cli: dict = {}
    if arch is not None:
        if arch not in ARCHS:
            raise CircuitsError(f"--arch must be one of {', '.join(ARCHS)}, got {arch!r}")
        cli["model"] = {"arch": arch}
    if p is not None:
        cli = deep_merge(cli, {"task": {"p": p}})
    if frac is not None:
        cli = deep_merge(cli, {"task": {"frac": frac}})
    if seeds is not None:
        if seeds < 1:
            raise CircuitsError(f"--seeds must be >= 1, got {seeds}")
        cli["seeds"] = list(range(seeds))
    if device is not None:
        cli = deep_merge(cli, {"train": {"device": device}})
    for item in overrides:
        cli = deep_merge(cli, parse_override(item))
    file = load_yaml(config_file) if config_file else {}
    layers = [base, file, cli]
    chosen = ModelConfig.arch
    for layer in layers:  # the architecture picks the preset's by_arch block, which sits under the rest
        chosen = (layer.get("model") or {}).get("arch", chosen)
    d = {"protocol": protocol, "preset": preset}
    for layer in [base, by_arch.get(chosen) or {}, file, cli]:
        d = deep_merge(d, layer)
    return from_dict(Config, d)


def protocol_fields(given: dict, defaults: dict, what: str) -> dict:
    """A protocol's `params` or `criteria` over its defaults: an unknown key or a value of the wrong
    type is a CircuitsError. Lists and None defaults take any value; numbers take their default's type."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        names = ", ".join(f"{what}.{k}" for k in unknown)
        raise CircuitsError(f"unknown config key(s) {names} (known: {', '.join(defaults)})")
    out = dict(defaults)
    for k, v in given.items():
        d = defaults[k]
        if d is None or isinstance(d, (list, dict, str)):
            out[k] = v
        elif isinstance(d, bool):
            if not isinstance(v, bool):
                raise CircuitsError(f"bad value for {what}.{k}: {v!r} (expected true or false)")
            out[k] = v
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(d, int) and v != int(v)):
            raise CircuitsError(f"bad value for {what}.{k}: {v!r} (expected {type(d).__name__})")
        else:
            out[k] = type(d)(v)
    return out
