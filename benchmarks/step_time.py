"""Time one full-batch AdamW step of the canonical config (p = 113, fraction 0.3, 3,830 training
pairs): circuits' trainer step against a plain PyTorch reference, in the same run.

    python -m benchmarks.step_time [--steps 20] [--threads 2]

Prints ms per step for each (ours with the float64 loss, the default, with train.loss_dtype float32,
and with model.dtype float64) and the ratio (target: ours <= 1/3 of the reference on a 2-core CPU).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.reference import ReferenceTransformer
from circuits.config import ModelConfig, OptimConfig, TaskConfig
from circuits.models import build_model
from circuits.tasks import make_dataset
from circuits.train import make_optimizer


def time_steps(model, x, y, steps: int, repeats: int, loss_dtype=torch.float64, ours: bool = True) -> float:
    """Median over `repeats` of the mean ms per training step: with circuits' optimiser (fused
    AdamW where torch has it, circuits.train.make_optimizer) or, ours=False, torch's default AdamW."""
    if ours:
        opt = make_optimizer(model.parameters(), OptimConfig(), weight_decay=1.0, lr=1e-3)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=OptimConfig().betas, weight_decay=1.0)

    def step():
        loss = F.cross_entropy(model(x).to(loss_dtype), y)   # as circuits.train (train.loss_dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - t) / steps * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = make_dataset(TaskConfig()).to(args.device)
    x, y = data.tokens[data.train_idx], data.labels[data.train_idx]          # [3830, 3], [3830]
    torch.manual_seed(0)
    ours = build_model(ModelConfig(), data.d_vocab, data.n_ctx).to(args.device)
    ref = ReferenceTransformer().to(args.device).load_from(ours)
    with torch.no_grad():
        diff = (ours(data.tokens) - ref(data.tokens)).abs().max().item()
    print(f"canonical transformer, p=113, {len(x)} training pairs, device {args.device}, "
          f"{torch.get_num_threads()} threads; max |logit difference| = {diff:.2e}")
    t_ref = time_steps(ref, x, y, args.steps, args.repeats, ours=False)
    t_ours = time_steps(ours, x, y, args.steps, args.repeats)
    t_32 = time_steps(ours, x, y, args.steps, args.repeats, loss_dtype=torch.float32)
    torch.manual_seed(0)
    ours64 = build_model(ModelConfig(dtype="float64"), data.d_vocab, data.n_ctx).to(args.device)
    t_64 = time_steps(ours64, x, y, args.steps, args.repeats)
    print(f"reference (plain, all positions, torch's AdamW): {t_ref:7.1f} ms/step")
    print(f"circuits (fast path, fused AdamW), float64 loss: {t_ours:7.1f} ms/step (the default, train.loss_dtype)")
    print(f"circuits, float32 loss:                          {t_32:7.1f} ms/step")
    print(f"circuits, float64 model (model.dtype):           {t_64:7.1f} ms/step")
    print(f"ratio ours/reference = {t_ours / t_ref:.3f}  (speed-up {t_ref / t_ours:.2f}x; target ratio <= 0.333)")


if __name__ == "__main__":
    main()
