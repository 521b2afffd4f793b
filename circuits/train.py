"""The training loop: full batch (default) or minibatch, warm-up, weight decay, phases, early stop,
divergence, checkpoints.

A run is a list of `Phase`s. Each has its own step budget and may swap the training set (e.g. a
nested subset, for ungrokking), the weight decay or the learning rate, and may restart the
optimiser. Every `eval_every` steps (and at each phase's end) the model is measured on train and
test (`metrics.evaluate`); `stop(row)` may end the run there (a resumed run first shows it the rows
it already has, so a rule over a window of rows decides as in an unbroken run). A non-finite loss ends it as
`diverged`. With a checkpoint path the run saves itself every `checkpoint_every` steps and a
re-run with the same path resumes where it stopped, with the same numbers as an unbroken run.
A checkpoint carries a fingerprint of what produced it (optimiser and step config, phases, seed,
parameter shapes, the task's labels and split, and the caller's `fingerprint_extra`): one of
another run, or a truncated one, is not resumed (one line on stderr; the run starts from step 0).
While a run trains into a checkpoint it holds the checkpoint's lock (`.NAME.lock` beside it): a
second process asking for the same checkpoint waits, then resumes the finished one.

The optimiser config's regularisers (all off by default, leaving the step untouched) act around
each step: Gaussian noise on the gradients (`grad_noise`), decoupled decay towards the weights at
the start of training instead of towards zero (`decay_to_init`), Gaussian noise on the weights
(`weight_noise`). Their noise comes from a generator of its own, seeded by the run's seed and kept
in checkpoints.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from circuits.config import OptimConfig, TrainConfig
from circuits.metrics import evaluate
from circuits.store import CorruptFile, config_hash, load_torch, locked, save_torch
from circuits.tasks import Dataset


@dataclass
class Phase:
    steps: int
    train_idx: torch.Tensor | None = None   # None: the dataset's training split
    weight_decay: float | None = None       # None: the optimiser config's
    lr: float | None = None
    fresh_optimizer: bool = False           # new optimiser state (and warm-up) at the phase start
    name: str = ""


@dataclass
class Result:
    history: list[dict] = field(default_factory=list)  # one row per evaluation
    status: str = "done"                               # done | stopped | diverged
    step: int = 0
    seconds: float = 0.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from circuits.errors import CircuitsError
        raise CircuitsError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def fusable(params: list[torch.Tensor]) -> bool:
    """Can torch's fused Adam(W) kernel take these parameters (floating point, on a CPU or CUDA)?
    It computes the same update as the default (foreach) one in one pass over the weights: equal
    to float rounding per step (tests/test_train.py), ~20% less time per step for our small models."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def make_optimizer(params, cfg: OptimConfig, weight_decay: float, lr: float) -> torch.optim.Optimizer:
    if cfg.name in ("adamw", "adam"):   # adam: an L2 penalty through the gradient
        params = list(params)
        cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        return cls(params, lr=lr, betas=cfg.betas, weight_decay=weight_decay, fused=fusable(params) or None)
    if cfg.name == "nadam":
        return torch.optim.NAdam(params, lr=lr, betas=cfg.betas, weight_decay=weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=weight_decay)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)


def train(model, data: Dataset, optim: OptimConfig, cfg: TrainConfig, *, phases: list[Phase] | None = None,
          stop: Callable[[dict], bool] | None = None, extra_metrics=(), checkpoint: str | Path | None = None,
          progress: Callable[[int, int, dict], None] | None = None, seed: int = 0,
          fingerprint_extra=None) -> Result:
    """Train model on data (see the module docstring); with a checkpoint, resume it if it is one of
    this very run (its fingerprint, which `fingerprint_extra` joins, matches), holding its lock."""
    kw = dict(phases=phases, stop=stop, extra_metrics=extra_metrics, checkpoint=checkpoint, progress=progress,
              seed=seed, fingerprint_extra=fingerprint_extra)
    if not checkpoint:
        return _train(model, data, optim, cfg, **kw)
    ck = Path(checkpoint)
    with locked(ck.parent / f".{ck.name}.lock", waiting=f"{ck} is being trained by {{holder}}; waiting for it"):
        return _train(model, data, optim, cfg, **kw)


def checkpoint_fingerprint(model, data: Dataset, optim: OptimConfig, cfg: TrainConfig, phases: list[Phase],
                           seed: int, extra=None) -> str:
    """A hash of everything that decides a checkpoint's numbers but the stop rule (callers name it
    in `extra`, with the run or cache key): optimiser, eval steps, phases, seed, parameter shapes,
    the task's labels and split. Device, threads and checkpoint interval are left out."""
    opt = dataclasses.asdict(optim)
    opt["betas"] = list(opt["betas"])
    precision = {} if cfg.loss_dtype == "float64" else {"loss_dtype": cfg.loss_dtype}   # the default: as before
    return config_hash({
        **precision, "optim": opt, "eval_every": cfg.eval_every, "seed": seed, "extra": extra,
        "phases": [{"steps": ph.steps, "train_idx": _tensor_hash(ph.train_idx), "weight_decay": ph.weight_decay,
                    "lr": ph.lr, "fresh_optimizer": ph.fresh_optimizer} for ph in phases],
        "params": [[name, list(p.shape)] + ([str(p.dtype)] if p.dtype != torch.float32 else [])
                   for name, p in model.named_parameters()],
        "task": {"tokens": list(data.tokens.shape), "labels": _tensor_hash(data.labels),
                 "train_idx": _tensor_hash(data.train_idx), "test_idx": _tensor_hash(data.test_idx)},
    })


def _tensor_hash(t: torch.Tensor | None) -> str | None:
    if t is None:
        return None
    t = t.detach().cpu().contiguous()
    return hashlib.sha256(str(t.dtype).encode() + str(list(t.shape)).encode() + t.numpy().tobytes()).hexdigest()[:16]


def read_checkpoint(path, fingerprint: str) -> dict | None:
    """The checkpoint at path if it is one of the run with this fingerprint; None (and one line on
    stderr) if it is missing, truncated or of another run. An unsafe file raises (UnsafeFile)."""
    if not os.path.exists(path):
        return None
    try:
        ck = load_torch(path)
    except CorruptFile as e:
        print(f"circuits: {e}; starting from step 0", file=sys.stderr, flush=True)
        return None
    if not isinstance(ck, dict) or ck.get("fingerprint") != fingerprint:
        print(f"circuits: {path} is a checkpoint of another run; starting from step 0", file=sys.stderr, flush=True)
        return None
    return ck


def _train(model, data: Dataset, optim: OptimConfig, cfg: TrainConfig, *, phases, stop, extra_metrics, checkpoint,
           progress, seed, fingerprint_extra) -> Result:
    phases = phases or [Phase(cfg.steps)]
    total = sum(ph.steps for ph in phases)
    res, pos = Result(), {"phase": 0, "phase_step": 0, "opt_step": 0}
    gen = torch.Generator().manual_seed(seed)      # minibatch order
    noise = noise_generator(model, optim, seed)    # None unless grad_noise or weight_noise
    theta_0 = [p.detach().clone() for p in model.parameters()] if optim.decay_to_init else None
    opt = None
    t_start = time.perf_counter()
    fingerprint = (checkpoint_fingerprint(model, data, optim, cfg, phases, seed, fingerprint_extra)
                   if checkpoint else None)

    ck = read_checkpoint(checkpoint, fingerprint) if checkpoint else None
    if ck is not None:
        model.load_state_dict(ck["model"])
        res, pos = Result(**ck["result"]), ck["pos"]
        if res.status != "done" or res.step >= total:                # finished: nothing to resume
            return res
        gen.set_state(ck["gen"])
        torch.set_rng_state(ck["rng"])
        set_cuda_rng(ck.get("cuda_rng"))
        if noise is not None:
            noise.set_state(ck["noise"])
        if theta_0 is not None:
            theta_0 = [t.to(p.device) for t, p in zip(ck["theta_0"], model.parameters())]
        ph = phases[pos["phase"]]
        opt = make_optimizer(model.parameters(), optim, _opt_wd(ph, optim), ph.lr or optim.lr)
        opt.load_state_dict(ck["opt"])
        t_start -= res.seconds
        for row in res.history if stop is not None else []:
            stop(row)           # a rule that looks back over a window sees what it saw before the kill

    def record(phase_i: int) -> bool:
        """Evaluate, append a row, report progress; True if the run must end here."""
        row = {"step": res.step, "phase": phase_i, **evaluate(model, data.with_train(train_idx), extra_metrics)}
        row["time"] = round(time.perf_counter() - t_start, 3)
        res.history.append(row)
        if progress:
            progress(res.step, total, row)
        if not all(torch.isfinite(torch.tensor(v)) for k, v in row.items() if k.endswith("loss")):
            res.status = "diverged"
        elif stop is not None and stop(row):
            res.status = "stopped"
        return res.status != "done"

    def save():
        res.seconds = time.perf_counter() - t_start
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "result": vars(res), "pos": dict(pos),
                 "gen": gen.get_state(), "rng": torch.get_rng_state(), "fingerprint": fingerprint}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        if noise is not None:
            state["noise"] = noise.get_state()
        if theta_0 is not None:
            state["theta_0"] = [t.cpu() for t in theta_0]
        save_torch(checkpoint, state)

    loss_dtype = getattr(torch, cfg.loss_dtype)
    model.train()
    for phase_i in range(pos["phase"], len(phases)):
        ph = phases[phase_i]
        train_idx = data.train_idx if ph.train_idx is None else ph.train_idx.to(data.tokens.device)
        x, y = data.tokens[train_idx], data.labels[train_idx]        # [n_train, n_ctx], [n_train]
        lr = ph.lr or optim.lr
        if pos["phase_step"] == 0:                                    # entering this phase (not resuming it)
            if opt is None or ph.fresh_optimizer:
                opt = make_optimizer(model.parameters(), optim, _opt_wd(ph, optim), lr)
                pos["opt_step"] = 0
            for group in opt.param_groups:
                group["weight_decay"] = _opt_wd(ph, optim)
            if not res.history or res.history[-1]["step"] != res.step:
                if record(phase_i):
                    break
        while pos["phase_step"] < ph.steps:
            if optim.batch_size and optim.batch_size < len(y):
                idx = torch.randperm(len(y), generator=gen)[: optim.batch_size].to(y.device)
                xb, yb = x[idx], y[idx]
            else:
                xb, yb = x, y
            for group in opt.param_groups:
                group["lr"] = lr * (min(pos["opt_step"] / optim.warmup, 1.0) if optim.warmup else 1.0)
            loss = F.cross_entropy(model(xb).to(loss_dtype), yb)   # float64 (default) as Nanda et al.: no float32 loss floor
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if optim.grad_noise:
                add_noise([p.grad for p in model.parameters() if p.grad is not None], optim.grad_noise, noise)
            if theta_0 is not None:
                decay_towards(list(model.parameters()), theta_0, opt.param_groups[0]["lr"] * _wd(ph, optim))
            opt.step()
            if optim.weight_noise:
                add_noise(list(model.parameters()), optim.weight_noise, noise)
            res.step += 1
            pos["phase_step"] += 1
            pos["opt_step"] += 1
            if res.step % cfg.eval_every == 0 or pos["phase_step"] == ph.steps:
                if record(phase_i):
                    break
            if checkpoint and res.step % cfg.checkpoint_every == 0:
                save()
        if res.status != "done":
            break
        pos["phase"], pos["phase_step"] = phase_i + 1, 0

    res.seconds = time.perf_counter() - t_start
    if checkpoint:
        pos["phase"] = min(pos["phase"], len(phases) - 1)
        save()
    return res


def set_cuda_rng(states) -> None:
    """Restore the CUDA generators a checkpoint saved (when there is CUDA and as many devices)."""
    if states is not None and torch.cuda.is_available() and len(states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states)


def _wd(ph: Phase, optim: OptimConfig) -> float:
    return optim.weight_decay if ph.weight_decay is None else ph.weight_decay


def _opt_wd(ph: Phase, optim: OptimConfig) -> float:
    """The optimiser's own weight decay: none when the loop decays towards the initial weights itself."""
    return 0.0 if optim.decay_to_init else _wd(ph, optim)


NOISE_SEED_OFFSET = 1_000_003     # the noise generator's seed is this + the run's seed


def noise_generator(model, optim: OptimConfig, seed: int) -> torch.Generator | None:
    """A generator of its own for the regularisers' noise (so the minibatch order does not change)."""
    if not (optim.grad_noise or optim.weight_noise):
        return None
    device = next(model.parameters()).device
    return torch.Generator(device=device).manual_seed(NOISE_SEED_OFFSET + seed)


@torch.no_grad()
def add_noise(tensors: list[torch.Tensor], std: float, gen: torch.Generator) -> None:
    """tensor += N(0, std^2), elementwise, for each tensor in order."""
    for t in tensors:
        t.add_(torch.randn(t.shape, generator=gen, device=t.device, dtype=t.dtype), alpha=std)


@torch.no_grad()
def decay_towards(params: list[torch.Tensor], theta_0: list[torch.Tensor], rate: float) -> None:
    """Decoupled decay towards theta_0: theta -= rate * (theta - theta_0), rate = lr_t * weight_decay
    (AdamW's own decay, theta -= rate * theta, is this with theta_0 = 0)."""
    for p, p0 in zip(params, theta_0):
        p.sub_(p - p0, alpha=rate)
