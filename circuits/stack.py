"""Stacked training: many runs of one model shape as one model with a leading member dimension.

The GPU lever for sweeps (THEORY.md: on a 2-core CPU separate processes are the lever, stacking
gave no speed-up there). Members share the architecture and the task's shape; each has its own
initialisation (seed), training split (fraction, split seed), weight decay and learning rate.
The members' losses are summed, so a member's gradient is that of its own loss alone: nothing
leaks between members. AdamW runs elementwise on the stacked tensors with per-member lr and
weight decay, as torch.optim.AdamW does per run. A member stops on its own criterion and is then
frozen; its history ends there. Full batch, one phase, AdamW only (`stackable` says which).
A protocol's extra metrics (`metrics.evaluate`'s `extra`, e.g. grokking's Fourier strengths) are
measured per member at each evaluation, on the member's own weights, logits and training split.
"""
from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from circuits.config import Config
from circuits.metrics import split_metrics
from circuits.tasks import Dataset
from circuits.train import Result


def stack_key(cfg: Config):
    """Runs with equal keys can share one stacked model; None if this run cannot be stacked."""
    o = cfg.optim
    if o.name != "adamw" or o.batch_size or cfg.model.dropout or o.decay_to_init or o.grad_noise or o.weight_noise:
        return None
    t = cfg.task
    return (repr(cfg.model), t.op, t.p, t.k, t.layout, cfg.train.steps, cfg.train.eval_every,
            cfg.optim.betas, cfg.optim.warmup, cfg.train.device, cfg.train.loss_dtype)


@torch.no_grad()
def member_extras(model, member_params: dict, data: Dataset, logits: torch.Tensor, extra_metrics) -> dict:
    """The extra metrics of one member: its weights loaded into its own model (eval mode, as
    `metrics.evaluate` sees it), with its logits on every input and its data."""
    named = dict(model.named_parameters())
    for k, p in member_params.items():
        named[k].copy_(p.detach())
    was_training = model.training
    model.eval()
    data = data.to(logits.device)
    row = {}
    for fn in extra_metrics:
        row.update(fn(model, data, logits))
    model.train(was_training)
    return row


def train_stacked(models: list, datas: list[Dataset], cfgs: list[Config], stops: list, device,
                  extra_metrics=()) -> list[Result]:
    """Train len(models) runs side by side; returns one Result per member, as `train` would (with
    `extra_metrics`, the callables (model, data, logits) -> dict of `train`, for every member)."""
    M, cfg0 = len(models), cfgs[0]
    base = copy.deepcopy(models[0]).to("meta")
    for module in base.modules():
        if hasattr(module, "bag"):
            module.bag = False                                                 # vmap-friendly, same logits
    params = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in models]).to(device).requires_grad_()
              for k, _ in models[0].named_parameters()}                       # each [M, ...]
    exp_avg = {k: torch.zeros_like(p) for k, p in params.items()}
    exp_avg_sq = {k: torch.zeros_like(p) for k, p in params.items()}
    lr = torch.tensor([c.optim.lr for c in cfgs], device=device)              # [M]
    wd = torch.tensor([c.optim.weight_decay for c in cfgs], device=device)    # [M]
    beta1, beta2 = cfg0.optim.betas
    eps = 1e-8

    tokens, labels = datas[0].tokens.to(device), datas[0].labels.to(device)  # the same task for all
    n_max = max(len(d.train_idx) for d in datas)
    idx = torch.zeros(M, n_max, dtype=torch.long, device=device)              # padded training sets
    weight = torch.zeros(M, n_max, dtype=torch.float64, device=device)        # 1/n on real rows, 0 on padding
    for m, d in enumerate(datas):
        n = len(d.train_idx)
        idx[m, :n] = d.train_idx.to(device)
        weight[m, :n] = 1.0 / n
    x, y = tokens[idx], labels[idx]                                           # [M, n_max, n_ctx], [M, n_max]

    def logits_of(p, inputs):                                                 # one member's logits
        return functional_call(base, p, (inputs,))

    members_logits = vmap(logits_of, in_dims=(0, 0))
    all_logits = vmap(logits_of, in_dims=(0, None))

    results = [Result() for _ in range(M)]
    active = torch.ones(M, dtype=torch.bool, device=device)
    t0 = time.perf_counter()

    def record(step: int) -> None:
        with torch.no_grad():
            logits = all_logits(params, tokens)                               # [M, n, d_vocab]
            norms = torch.sqrt(sum((p.detach() ** 2).flatten(1).sum(1) for p in params.values()))
        for m in range(M):
            if not active[m]:
                continue
            d = datas[m]
            row = {"step": step, "phase": 0,
                   **split_metrics(logits[m, d.train_idx], labels[d.train_idx], "train"),
                   "param_norm": norms[m].item()}
            if len(d.test_idx):
                row.update(split_metrics(logits[m, d.test_idx], labels[d.test_idx], "test"))
            if extra_metrics:
                row.update(member_extras(models[m], {k: p[m] for k, p in params.items()}, d, logits[m], extra_metrics))
            row["time"] = round(time.perf_counter() - t0, 3)
            res = results[m]
            res.history.append(row)
            res.step = step
            if not all(math.isfinite(v) for k, v in row.items() if k.endswith("loss")):
                res.status = "diverged"
            elif stops[m] is not None and stops[m](row):
                res.status = "stopped"
            if res.status != "done":
                active[m] = False

    record(0)
    loss_dtype = getattr(torch, cfg0.train.loss_dtype)
    for step in range(cfg0.train.steps):
        if not active.any():
            break
        logits = members_logits(params, x)                                    # [M, n_max, d_vocab]
        ce = F.cross_entropy(logits.to(loss_dtype).flatten(0, 1), y.flatten(), reduction="none").view(M, n_max)
        loss = (ce * weight * active[:, None]).sum()                          # sum of the members' mean losses
        grads = torch.autograd.grad(loss, list(params.values()))
        scale = min(step / cfg0.optim.warmup, 1.0) if cfg0.optim.warmup else 1.0
        lr_t = lr * scale * active                                            # a stopped member stays put
        with torch.no_grad():
            t = step + 1
            for (k, p), g in zip(params.items(), grads):
                shape = (M,) + (1,) * (p.dim() - 1)
                p.mul_((1 - lr_t * wd).view(shape))
                exp_avg[k].lerp_(g, 1 - beta1)
                exp_avg_sq[k].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (exp_avg_sq[k].sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
                p.sub_((lr_t / (1 - beta1**t)).view(shape) * exp_avg[k] / denom)
        if (step + 1) % cfg0.train.eval_every == 0 or step + 1 == cfg0.train.steps:
            record(step + 1)
    seconds = time.perf_counter() - t0
    for m, model in enumerate(models):
        model.load_state_dict({k: p[m].detach().cpu() for k, p in params.items()})
        results[m].seconds = seconds
    return results
