"""Typed configs: dataclasses with canonical defaults (THEORY.md), YAML presets, `key=value` overrides.

Merge order, later wins: dataclass defaults (the canonical setup) <- preset <- preset.by_arch[arch]
<- --config FILE <- --arch/--p/--frac <- --set key=value. Without --preset, the preset is the one set
at the --p asked for (`preset_for`: --p 113 is the paper's setting), else quick.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, get_type_hints

import yaml

from circuits.errors import CircuitsError, did_you_mean, unknown_key

ARCHS = ("transformer", "mlp", "rnn", "lstm", "gru", "birnn")
OPS = ("+", "-", "*", "/")
LAYOUTS = ("xy=", "xopy=", "xy")
OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop", "nadam")
LOSS_DTYPES = ("float64", "float32")
MODEL_DTYPES = ("float32", "float64")
LOGGERS = ("none", "tensorboard", "wandb")


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise CircuitsError(msg)


@dataclass
class TaskConfig:
    op: str = "+"              # (x op y) mod p
    p: int = 113               # the modulus (prime for division); p^2 pairs in all
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


def describe(m: "ModelConfig") -> str:
    """The model in a few words (a run's first line, figure titles)."""
    if m.arch == "transformer":
        text = f"{m.n_layers}-layer transformer d_model {m.d_model}, {m.n_heads} heads x {m.d_head}, d_mlp {m.d_mlp}"
    elif m.arch == "mlp":
        text = f"MLP d_model {m.d_model}, {m.mlp_depth} x d_mlp {m.d_mlp}"
    else:
        text = f"{m.arch} d_model {m.d_model}, hidden {m.hidden} x {m.rnn_layers}"
    return text if m.dtype == "float32" else f"{text} ({m.dtype})"


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


@dataclass
class ModelConfig:
    arch: str = "transformer"  # transformer | mlp | rnn | lstm | gru | birnn
    # transformer (canonical: Nanda et al. 2023)
    n_layers: int = 1          # transformer blocks
    d_model: int = 128         # also the token-embedding width of the MLP and recurrent models
    n_heads: int = 4           # attention heads per block
    d_head: int = 32           # width of each head
    d_mlp: int = 512           # transformer MLP width; also the MLP model's hidden width
    act: str = "relu"          # relu | gelu (MLP layers)
    layernorm: bool = False    # LayerNorm before attention, MLP and unembedding (none in the canonical model)
    fast: bool = True          # last-position fast path (same logits to 1e-5)
    # mlp model: per-token embeddings concatenated -> mlp_depth hidden layers of d_mlp
    mlp_depth: int = 1         # hidden layers of the MLP model
    # recurrent models
    hidden: int = 256          # recurrent hidden width
    rnn_layers: int = 2        # stacked recurrent layers
    bidirectional: bool = False  # birnn is rnn with this on
    dropout: float = 0.0       # dropout on hidden activations (0: off)
    dtype: str = "float32"     # parameter precision: float32 | float64 (slower; half precisions are refused: grokking's late phase lives below their rounding)

    def __post_init__(self):
        _check(self.arch in ARCHS, f"model.arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        _check(self.dtype in MODEL_DTYPES, f"model.dtype must be float32 or float64, got {self.dtype!r}")
        _check(self.act in ("relu", "gelu"), f"model.act must be relu or gelu, got {self.act!r}")
        for name in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "mlp_depth", "hidden", "rnn_layers"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, f"model.{name} must be an integer >= 1, got {v!r}")
        _check(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class OptimConfig:
    name: str = "adamw"        # adamw | adam (L2 through the gradient) | sgd | rmsprop | nadam
    lr: float = 1e-3           # learning rate (after warm-up)
    betas: tuple[float, float] = (0.9, 0.98)  # Adam(W) moment decay rates (Nanda et al.)
    weight_decay: float = 1.0  # decoupled (adamw) or L2 (others) weight decay
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
        for name in ("grad_noise", "weight_noise", "momentum"):
            v = getattr(self, name)
            _check(math.isfinite(v) and v >= 0, f"optim.{name} must be a finite number >= 0, got {v}")
        self.betas = tuple(float(b) for b in self.betas)


@dataclass
class TrainConfig:
    steps: int = 40_000        # step budget
    eval_every: int = 100      # steps between evaluations on train and test (rows of metrics.csv)
    checkpoint_every: int = 2_000  # steps between checkpoints (a killed run resumes from the last)
    device: str = "auto"       # auto | cpu | cuda
    threads: int = 0           # torch threads; 0: torch's default
    save_every: int = 0        # also keep the weights every K steps (a multiple of eval_every), from step 0, as
                               # seed{N}/trajectory/step{S}.safetensors; 0: the final weights only
    loss_dtype: str = "float64"  # the training loss's precision: float64 (Nanda et al.: no float32 loss floor) | float32
    log: str = "none"          # none | tensorboard | wandb: also send each evaluation row there (circuits.loggers)

    def __post_init__(self):
        _check(self.steps >= 1 and self.eval_every >= 1 and self.checkpoint_every >= 1,
               "train.steps, train.eval_every and train.checkpoint_every must be >= 1")
        _check(self.save_every >= 0 and self.save_every % self.eval_every == 0,
               f"train.save_every must be 0 or a multiple of train.eval_every ({self.eval_every}), got {self.save_every}")
        _check(self.loss_dtype in LOSS_DTYPES, f"train.loss_dtype must be float64 or float32, got {self.loss_dtype!r}")
        _check(self.log in LOGGERS, f"train.log must be one of {', '.join(LOGGERS)}, got {self.log!r}")
        _check(self.device in ("auto", "cpu", "cuda"), f"train.device must be auto, cpu or cuda, got {self.device!r}")
        _check(self.threads >= 0, f"train.threads must be >= 0 (0: torch's default), got {self.threads}")


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

SECTIONS = ("task", "model", "optim", "train", "criteria", "params", "sweep")   # mappings, never scalars
FIXED = ("protocol", "preset")      # chosen by the command (`circuits run NAME --preset P`), not by --set


def from_dict(cls, d: dict, where: str = ""):
    """Build dataclass `cls` from a nested dict; an unknown key is a CircuitsError."""
    if not isinstance(d, dict):
        raise CircuitsError(f"{where or 'config'} must be a mapping of its fields, got {d!r}"
                            + (f" (set one field: --set {where}.FIELD=VALUE)" if where else ""))
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in d.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise unknown_key(path, sorted(names), f"{where}." if where else "")
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
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise TypeError
            return float(value)
        if tp is str:
            return str(value)
        if origin is tuple:
            out = tuple(float(v) for v in value)
            if not all(math.isfinite(v) for v in out):
                raise TypeError
            return out
        if origin is list:
            (item,) = tp.__args__
            return [_coerce(item, v, path) for v in (value if isinstance(value, (list, tuple)) else [value])]
        if origin is dict and not isinstance(value, dict):
            raise CircuitsError(f"{path} is a section, not a value: set one of its keys, e.g. --set {path}.KEY=VALUE "
                                f"(got {path}={value!r})")
    except (TypeError, ValueError, OverflowError) as e:
        if isinstance(e, CircuitsError):
            raise
        expected = "a finite number" if tp is float else "an integer" if tp is int else getattr(tp, "__name__", tp)
        raise CircuitsError(f"bad value for {path}: {value!r} (expected {expected})") from None
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
    """'model.d_model=64' -> {'model': {'d_model': 64}}; the value is read as YAML. The protocol and
    the preset are the command's own (`circuits run NAME --preset P`), never a --set."""
    if "=" not in item:
        raise CircuitsError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    top = key.strip().split(".")[0]
    if top in FIXED:
        how = "the protocol argument (circuits run NAME)" if top == "protocol" else "--preset NAME"
        raise CircuitsError(f"--set cannot change {top}; give it with {how}")
    return nest(key, read_value(raw))


_SCIENTIFIC = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+")   # 1e-3, 2E5: YAML 1.1 reads these as strings


def read_value(raw: str):
    """A --set / --sweep value read as YAML, with 1e-3-style numbers read as numbers."""
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return raw
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        return float(value)
    return value


SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml's safe loader where built: ~10x faster


def load_yaml(path) -> dict:
    """A YAML file holding a mapping; any problem reading it is one CircuitsError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=SAFE_LOADER) or {}
    except FileNotFoundError:
        raise CircuitsError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise CircuitsError(f"config file {path} is a directory, not a YAML file") from None
    except UnicodeDecodeError as e:
        raise CircuitsError(f"config file {path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except yaml.YAMLError as e:
        raise CircuitsError(f"config file {path} is not valid YAML: {' '.join(str(e).split())}") from None
    except OSError as e:
        raise CircuitsError(f"cannot read config file {path}: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise CircuitsError(f"config file {path} must hold a mapping")
    return data


def _check_sections(layer: dict, where: str) -> None:
    """Sections (task, model, ..., criteria, params, sweep) must be mappings, never a scalar."""
    for key in SECTIONS:
        if key in layer and not isinstance(layer[key], dict):
            raise CircuitsError(f"{where}: {key} is a section, not a value: set one of its fields, "
                                f"e.g. --set {key}.FIELD=VALUE (got {key}={layer[key]!r})")


def preset_for(presets: dict, p: int | None) -> str:
    """The preset a run takes when none is named: the one set at the modulus asked for (`--p 113`
    alone means the paper's setting, model and sizes included, not the quick preset at another p),
    else quick. A preset's modulus is its task.p, or the canonical 113 when it does not set one."""
    if p is not None:
        for name, body in presets.items():
            if ((body or {}).get("task") or {}).get("p", TaskConfig.p) == p:
                return name
    return "quick"


def resolve(protocol: str, presets: dict, preset: str | None = "quick", *, arch: str | None = None,
            config_file: str | None = None, p: int | None = None, frac: float | None = None,
            seeds: int | None = None, device: str | None = None, overrides: list[str] = ()) -> Config:
    """The fully resolved config of one protocol run (see the module docstring for the order).
    preset None: `preset_for(presets, p)`."""
    if preset is None:
        preset = preset_for(presets, p)
    if preset not in presets:
        raise CircuitsError(f"protocol {protocol!r} has no preset {preset!r} "
                            f"({did_you_mean(preset, presets)}has: {', '.join(presets)})")
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
    _check_sections(cli, "--set")
    file = load_yaml(config_file) if config_file else {}
    _check_sections(file, f"config file {config_file}")
    for key, given in (("protocol", protocol), ("preset", preset)):   # a saved config.yaml may be passed back
        if key in file and file[key] != given:
            raise CircuitsError(f"config file {config_file} is for {key} {file[key]!r}, not {given!r}")
    layers = [base, file, cli]
    chosen = ModelConfig.arch
    for layer in layers:  # the architecture picks the preset's by_arch block, which sits under the rest
        chosen = (layer.get("model") or {}).get("arch", chosen)
    if preset == "quick":
        _check_quick_arch(protocol, base, by_arch, chosen, [file, cli])
    d = {"protocol": protocol, "preset": preset}
    for layer in [base, by_arch.get(chosen) or {}, file, cli]:
        d = deep_merge(d, layer)
    return from_dict(Config, d)


def _check_quick_arch(protocol: str, base: dict, by_arch: dict, chosen: str, user_layers: list[dict]) -> None:
    """The quick preset promises minutes: an architecture it has no setting for (its own model or a
    by_arch block) would fall back to the canonical sizes and run for far longer, so it is refused
    in one line, unless the user sets the model's sizes (--set model.X / --config) themselves."""
    has = list(dict.fromkeys([(base.get("model") or {}).get("arch", ModelConfig.arch), *by_arch]))
    sized_by_user = any(k != "arch" for layer in user_layers for k in (layer.get("model") or {}))
    if chosen not in has and not sized_by_user:
        raise CircuitsError(f"{protocol}'s quick preset has no setting for --arch {chosen} (it has: {', '.join(has)}); "
                            f"use one of those, --preset paper, or size the model yourself (--set model.hidden=128 ...)")


def protocol_fields(given: dict, defaults: dict, what: str) -> dict:
    """A protocol's `params` or `criteria` over its defaults: an unknown key or a value of the wrong
    type is a CircuitsError. Lists and None defaults take any value; numbers take their default's type."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise unknown_key(f"{what}.{unknown[0]}", list(defaults), f"{what}.")
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
