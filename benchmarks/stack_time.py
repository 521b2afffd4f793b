"""Stacked training against one run after another, on this machine's device: M runs of one model
shape (different seeds and weight decays) for S steps each, full batch, no early stop.

    python -m benchmarks.stack_time [--members 64] [--steps 200] [--device cuda] [--p 113] [--n-train 390]

Prints both wall times and the ratio. The GPU target is >= 10x for 64 canonical transformers; on
a 2-core CPU stacking is not expected to help at the canonical split (3,830 pairs, compute-bound);
`--n-train` sets each member's training split (e.g. 390: an ungrokking subset, overhead-bound).
"""
from __future__ import annotations

import argparse
import time

import torch

from circuits.config import Config, ModelConfig, TaskConfig, TrainConfig
from circuits.experiment import build
from circuits.stack import train_stacked
from circuits.train import resolve_device, train


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--p", type=int, default=113)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n-train", type=int, default=None, help="pairs in each member's training split (default: the canonical 30%%)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    frac = args.n_train / args.p**2 if args.n_train else TaskConfig().frac
    cfgs = []
    for m in range(args.members):
        c = Config(task=TaskConfig(p=args.p, frac=frac), model=ModelConfig(), seeds=[m],
                   train=TrainConfig(steps=args.steps, eval_every=args.steps, device=device.type))
        c.optim.weight_decay = (0.3, 1.0, 3.0)[m % 3]
        cfgs.append(c)

    _sync(device)
    t = time.perf_counter()
    for c in cfgs:
        model, data = build(c, c.seeds[0], device)
        train(model, data, c.optim, c.train, seed=c.seeds[0])
    _sync(device)
    t_seq = time.perf_counter() - t

    t = time.perf_counter()
    built = [build(c, c.seeds[0], device) for c in cfgs]
    train_stacked([m for m, _ in built], [d for _, d in built], cfgs, [None] * len(cfgs), device)
    _sync(device)
    t_stack = time.perf_counter() - t
    n_train = len(built[0][1].train_idx)
    print(f"{args.members} canonical transformers (p={args.p}, {n_train} training pairs each, "
          f"{torch.get_num_threads()} threads), {args.steps} steps each, on {device}: "
          f"one after another {t_seq:.1f} s, stacked {t_stack:.1f} s, speed-up {t_seq / t_stack:.2f}x")


if __name__ == "__main__":
    main()
