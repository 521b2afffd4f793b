"""The Slurm side of `--executor slurm` (needs submitit: pip install -e ".[slurm]").

A point runs as `PointJob()(point)`. PointJob is submitit's Checkpointable: on preemption or at the
time limit Slurm signals the job, submitit calls `checkpoint`, which requeues the same call; the
protocol run then resumes from its own checkpoints (nothing finished is trained again).
"""
from __future__ import annotations

from submitit.helpers import Checkpointable, DelayedSubmission, as_completed


class PointJob(Checkpointable):
    """One sweep point on a Slurm node; requeued as itself when preempted or timed out."""

    def __call__(self, point) -> str:
        from circuits.sweep import run_point
        run_point(point.cfg, point.run_dir)
        return point.name

    def checkpoint(self, point) -> DelayedSubmission:
        return DelayedSubmission(PointJob(), point)      # the run resumes from its checkpoints


def completed(jobs):
    """The jobs in the order they finish (their results gathered as they complete)."""
    return as_completed(jobs)
