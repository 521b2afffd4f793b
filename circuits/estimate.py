"""An upper bound on a run's wall time, for its first line: the step budget a protocol plans (its
`budget(cfg)`: [(training examples per step, steps, worker processes sharing such runs)], every
run to its cap; `default_budget`: each seed on the training split, one process) times this machine's
measured time per step (a few real full-batch steps of the run's model at the smallest and largest
batch, interpolated linearly in the batch size, on the torch threads each worker process will have:
circuits.parallel gives each cores // workers), divided over the worker processes it will use.
Runs that stop early (settled, grokked) take less: it is a bound, said as such.
"""
from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

from circuits.config import Config
from circuits.experiment import build, torch_threads
from circuits.train import make_optimizer, resolve_device

TIMED_STEPS = 3


def step_seconds(cfg: Config, n: int, threads: int | None = None) -> float:
    """Seconds per full-batch training step of cfg's model on n examples, measured here on the device
    the run will train on (train.device; on a CPU with `threads` torch threads, default: the config's)."""
    device = resolve_device(cfg.train.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch_threads(cfg.train.threads if threads is None else threads):
        model, data = build(cfg, 0, device)
        idx = data.train_idx[:n] if n <= len(data.train_idx) else torch.randint(len(data.tokens), (n,), device=device)
        x, y = data.tokens[idx], data.labels[idx]                          # [n, n_ctx], [n]
        opt = make_optimizer(model.parameters(), cfg.optim, cfg.optim.weight_decay, cfg.optim.lr)
        loss_dtype = getattr(torch, cfg.train.loss_dtype)

        def step():
            loss = F.cross_entropy(model(x).to(loss_dtype), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()                                                             # warm-up
        sync()
        t = time.perf_counter()
        for _ in range(TIMED_STEPS):
            step()
        sync()
        return (time.perf_counter() - t) / TIMED_STEPS


def default_budget(cfg: Config) -> list[tuple[int, int, int]]:
    """One run per seed on the training split to the step cap, one after another."""
    n = max(1, round(cfg.task.frac * cfg.task.p ** cfg.task.k))
    return [(n, cfg.train.steps, 1)] * len(cfg.seeds)


def upper_bound(cfg: Config, module) -> float | None:
    """Seconds for every planned step at its cap, over the workers (0: nothing left to train); None
    for a protocol that does not say its budget (no `budget(cfg)`): no number rather than a wrong one."""
    plan = module.budget(cfg) if hasattr(module, "budget") else None
    return None if plan is None else plan_seconds(cfg, plan)


def sweep_bound(cfgs: list[Config], module, workers: int) -> float | None:
    """Seconds for a sweep's unfinished points (cfgs) at their caps: each point runs in one of
    `workers` processes, its own runs one after another there (circuits.parallel: no pool inside a
    pool) on cores // workers torch threads; the points spread over the workers. None as upper_bound."""
    if not hasattr(module, "budget"):
        return None
    threads, memo = max(1, (os.cpu_count() or 1) // workers), {}        # the points mostly share a step shape
    return makespan([plan_seconds(c, module.budget(c), threads, memo) for c in cfgs], workers)


def plan_seconds(cfg: Config, plan: list[tuple[int, int, int]], threads: int | None = None,
                 memo: dict | None = None) -> float:
    """Seconds for plan's steps: the step time measured for each worker count on the threads such a
    worker gets (with `threads`: the whole plan in one process on that many), interpolated linearly
    in the batch between the plan's smallest and largest, the runs of each count spread over it
    (`makespan`).
    memo keeps the step times measured (`measured`) for the next call."""
    if not plan:
        return 0.0                                  # everything it needs is in the cache
    if threads is not None:
        plan = [(n, steps, 1) for n, steps, _ in plan]
    sizes = sorted({n for n, _, _ in plan})
    lo, hi = sizes[0], sizes[-1]
    per, memo = {}, {} if memo is None else memo    # workers -> seconds per step as a function of n
    for workers in {w for _, _, w in plan}:
        t = threads or (cfg.train.threads if workers <= 1 else max(1, (os.cpu_count() or 1) // workers))
        t_lo = measured(cfg, lo, t, memo)
        t_hi = measured(cfg, hi, t, memo) if hi != lo else t_lo
        per[workers] = (lambda n, a=t_lo, b=t_hi: a + (b - a) * (n - lo) / (hi - lo) if hi != lo else a)
    return sum(makespan([per[w](n) * steps for n, steps, w_ in plan if w_ == w], w) for w in per)


def makespan(seconds: list[float], workers: int) -> float:
    """At most how long runs of these durations take on `workers` processes, each taking the next
    run when it is free: sum / workers + (1 - 1 / workers) x the longest (Graham's bound), so one
    long run is never counted as spread over several processes."""
    w = max(1, workers)
    return sum(seconds) / w + (1 - 1 / w) * max(seconds, default=0.0)


def measured(cfg: Config, n: int, threads: int | None, memo: dict) -> float:
    """step_seconds, measured once per step shape (model, task shape, optimiser, batch, threads) in memo."""
    t = cfg.task
    key = (repr(cfg.model), t.op, t.p, t.k, t.layout, cfg.optim.name, cfg.train.loss_dtype, cfg.train.device, n, threads)
    if key not in memo:
        memo[key] = step_seconds(cfg, n, threads)
    return memo[key]


def said(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds == 0:
        return "; nothing left to train (all read from the cache)"
    if seconds < 120:
        return f"; at most ~{seconds:.0f} s here (step caps; runs that stop early take less)"
    return f"; at most ~{seconds / 60:.0f} min here (step caps; runs that stop early take less)"

