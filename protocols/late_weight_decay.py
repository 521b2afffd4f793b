"""Late weight decay (seed report 002): weight decay is not needed early in training. Off from the
start and switched on at step T, the network still groks; without weight decay at all, or with it
removed too early (at step T2), test accuracy stays low.

Runs. Per seed, four schedules of the optimiser's weight decay (optim.weight_decay when on, 0 when
off), each a list of circuits.train.Phase with one optimiser kept across phases (AdamW: only the
decay changes at the switch); every run ends early once train and test accuracy reach
criteria.train_acc and criteria.grok_acc, else at train.steps:
  always    on throughout (the baseline: the grokking protocol's run)
  never     off throughout
  late      off until params.T, then on
  removed   on until params.T2, then off
Read per run: t_fit (first eval with train accuracy >= criteria.train_acc), t_grok (test accuracy >=
criteria.grok_acc), test accuracy at the switch and at the end.

Criteria, per seed, with low = criteria.low_test_acc (the grokking protocol's bound for "fit without
generalising") and window(S) = train.steps - switch step, which must be at least
criteria.min_window_factor x the same seed's `always` t_grok before a run that did not grok can count
as evidence (else inconclusive: the budget could not have shown grokking):
  always    holds if it groks (else inconclusive, and a schedule of that seed that did not grok has no
            baseline to be judged against: inconclusive too).
  never     holds if it fits, does not grok and ends with test accuracy <= low; fails if it groks or
            ends above low.
  late      inconclusive if test accuracy at T is already > low (the run generalised without weight
            decay: T was not late); holds if it groks after T; fails if it does not.
  removed   inconclusive if test accuracy at T2 is already > low (removal was not early: generalisation
            had begun); holds if it does not grok and ends <= low; fails if it groks or ends above low.
A schedule's status combines its seeds (circuits.detect.combine); the verdict combines the schedules.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from circuits import plots
from circuits.config import Config, protocol_fields
from circuits.detect import Verdict, claims_from, combine, first_step, value_at
from circuits.errors import CircuitsError
from circuits.experiment import LIVE, begin, build, finish, live_progress, setup
from circuits.parallel import pmap
from circuits.progress import Bar
from circuits.train import Phase, train
from protocols.grokking import sensitivity

NAME = "late-weight-decay"
CLAIM = ("weight decay switched on only late still groks; without weight decay, or with it removed too "
         "early, test accuracy stays low")
DEFAULTS = {"T": 500, "T2": 250, "workers": None}
PARAMS_DOC = {
    "T": "the step at which weight decay is switched on (`late`)",
    "T2": "the step at which weight decay is removed (`removed`)",
    "workers": "worker processes (None: one per core)",
}
CRITERIA = {"train_acc": 0.99, "grok_acc": 0.99, "low_test_acc": 0.5, "min_window_factor": 1.5}
SCHEDULES = ("always", "never", "late", "removed")
CLAIMS = {"always": "the baseline (weight decay on throughout) groks",
          "never": "without weight decay test accuracy stays low",
          "late": "weight decay switched on only late still groks",
          "removed": "weight decay removed too early: test accuracy stays low"}
# neighbouring values of the thresholds for measured.sensitivity (grok_acc only downwards: runs stop there)
SENSITIVITY = {"grok_acc": [0.95, 0.99], "low_test_acc": [0.3, 0.5, 0.7], "min_window_factor": [1.0, 1.5, 2.0]}


@dataclass
class Job:
    cfg: Config
    schedule: str
    seed: int
    checkpoint: str
    live: str = ""         # a CSV that gets each evaluation row as it comes (run_dir/live/NAME.csv)

    @property
    def name(self) -> str:
        return f"{self.schedule}-seed{self.seed}"


def params(cfg: Config) -> dict:
    p = protocol_fields(cfg.params, DEFAULTS, "params")
    for key in ("T", "T2"):
        if not 0 < p[key] < cfg.train.steps:
            raise CircuitsError(f"params.{key} must be a step in (0, train.steps = {cfg.train.steps}), got {p[key]}")
    if cfg.optim.weight_decay <= 0:
        raise CircuitsError("late-weight-decay switches optim.weight_decay on and off: it must be > 0")
    return p


def criteria(cfg: Config) -> dict:
    return protocol_fields(cfg.criteria, CRITERIA, "criteria")


def switch_step(schedule: str, p: dict) -> int:
    """The step at which the schedule changes the weight decay (0: never changes)."""
    return {"late": p["T"], "removed": p["T2"]}.get(schedule, 0)


def phases(schedule: str, steps: int, wd: float, p: dict) -> list[Phase]:
    """The schedule as phases of weight decay over a budget of `steps`."""
    if schedule not in SCHEDULES:
        raise CircuitsError(f"unknown schedule {schedule!r} (known: {', '.join(SCHEDULES)})")
    if schedule in ("always", "never"):
        return [Phase(steps, weight_decay=wd if schedule == "always" else 0.0, name=schedule)]
    T = switch_step(schedule, p)
    first, then = (0.0, wd) if schedule == "late" else (wd, 0.0)
    return [Phase(T, weight_decay=first, name=f"{schedule}: wd {first:g}"),
            Phase(steps - T, weight_decay=then, name=f"{schedule}: wd {then:g}")]


def run_job(job: Job) -> tuple[list[dict], str]:
    """Train one schedule from scratch (resuming from its checkpoint); its history and end status."""
    cfg, crit = job.cfg, criteria(job.cfg)
    device = setup(cfg)
    model, data = build(cfg, job.seed, device)
    res = train(model, data, cfg.optim, cfg.train, phases=phases(job.schedule, cfg.train.steps, cfg.optim.weight_decay,
                                                                 params(cfg)),
                stop=lambda r: r["train_acc"] >= crit["train_acc"] and r.get("test_acc", 0.0) >= crit["grok_acc"],
                checkpoint=job.checkpoint, seed=job.seed,
                progress=live_progress(None, job.live))
    return res.history, res.status


def numbers(h: list[dict], status: str, switch: int, crit: dict) -> dict:
    """A run's steps to fit and to grok, its accuracies at the switch (None if it ended before) and at the end."""
    return {"t_fit": first_step(h, "train_acc", crit["train_acc"]),
            "t_grok": first_step(h, "test_acc", crit["grok_acc"]), "switch": switch or None,
            "test_acc_at_switch": value_at(h, "test_acc", switch) if switch else None,
            "final_test_acc": h[-1]["test_acc"],
            "final_train_acc": h[-1]["train_acc"], "max_test_acc": max(r["test_acc"] for r in h),
            "steps": h[-1]["step"], "final_param_norm": h[-1]["param_norm"],
            "param_norm_at_switch": value_at(h, "param_norm", switch) if switch else None,
            "diverged": status == "diverged"}


def judge(schedule: str, m: dict, baseline_t_grok: int | None, steps: int, crit: dict) -> str:
    """One schedule of one seed, given the same seed's `always` t_grok (see the module docstring)."""
    if m["diverged"]:
        return "diverged"
    if schedule == "always":
        return "holds" if m["t_grok"] is not None else "inconclusive"
    low = crit["low_test_acc"]
    early = m["t_grok"] is not None and m["t_grok"] <= (m["switch"] or 0)
    if m["switch"] and (early or (m["test_acc_at_switch"] or 0.0) > low):
        return "inconclusive"                          # generalised before the switch: nothing to test
    if schedule == "late" and m["t_grok"] is not None:
        return "holds"
    if schedule != "late" and (m["t_grok"] is not None or m["final_test_acc"] > low):
        return "fails"                                 # grokked (or is generalising) without weight decay
    if m["t_fit"] is None or baseline_t_grok is None:
        return "inconclusive"
    window = steps - (m["switch"] or 0)
    if window < crit["min_window_factor"] * baseline_t_grok:
        return "inconclusive"                          # too short a budget to show that it does not grok
    return "fails" if schedule == "late" else "holds"


def judge_seed(results: dict[str, tuple[list[dict], str]], p: dict, steps: int, crit: dict) -> dict:
    """One seed: schedule -> (history, run status) in, schedule -> numbers with their status out (pure)."""
    m = {s: numbers(*results[s], switch_step(s, p), crit) for s in SCHEDULES}
    for s in SCHEDULES:
        m[s]["status"] = judge(s, m[s], m["always"]["t_grok"], steps, crit)
    return m


def statuses_of(per_seed: dict) -> dict:
    """Each schedule's status combined over the seeds."""
    return {s: combine([m[s]["status"] for m in per_seed.values()]) for s in SCHEDULES}


def run(cfg: Config, run_dir) -> Verdict:
    p, crit = params(cfg), criteria(cfg)
    started = begin(cfg, run_dir)
    jobs = [Job(cfg, s, seed, str(Path(run_dir) / "jobs" / f"{s}-seed{seed}" / "checkpoint.pt"),
                str(Path(run_dir) / LIVE / f"{s}-seed{seed}.csv"))
            for seed in cfg.seeds for s in ("never", "removed", "late", "always")]   # longest first
    bar = Bar(f"late weight decay {cfg.model.arch}: {len(jobs)} runs")
    results = dict(zip((j.name for j in jobs), pmap(run_job, jobs, p["workers"], on_done=bar)))
    bar.close()
    hists = {name: h for name, (h, _) in results.items()}
    by_seed = {seed: {s: results[f"{s}-seed{seed}"] for s in SCHEDULES} for seed in cfg.seeds}
    per_seed = {seed: judge_seed(r, p, cfg.train.steps, crit) for seed, r in by_seed.items()}
    statuses = statuses_of(per_seed)

    def status_at(c: dict) -> dict:
        return statuses_of({seed: judge_seed(r, p, cfg.train.steps, c) for seed, r in by_seed.items()})

    measured = {"statuses": statuses, "claims": claims_from({CLAIMS[s]: st for s, st in statuses.items()}),
                "weight_decay": cfg.optim.weight_decay, "T": p["T"], "T2": p["T2"],
                "steps": cfg.train.steps, **summary(per_seed), "per_seed": per_seed,
                "sensitivity": sensitivity(status_at, crit, SENSITIVITY)}
    verdict = Verdict(NAME, CLAIM, combine(list(statuses.values())), measured, crit, seeds=list(cfg.seeds))
    figure(cfg, p, hists, statuses, run_dir)
    return finish(cfg, run_dir, verdict, hists, started, {j.name: Path(j.checkpoint) for j in jobs})


def summary(per_seed: dict) -> dict:
    """Per schedule, over seeds: median steps to fit and to grok (None if a seed did not), mean final test accuracy."""
    out = {}
    for s in SCHEDULES:
        rows = [m[s] for m in per_seed.values()]
        groks = [r["t_grok"] for r in rows]
        fits = [r["t_fit"] for r in rows]
        out[f"{s}_steps_to_fit"] = statistics.median(fits) if None not in fits else None
        out[f"{s}_steps_to_grok"] = statistics.median(groks) if None not in groks else None
        out[f"{s}_final_test_acc"] = statistics.mean(r["final_test_acc"] for r in rows)
    return out


TITLES = {"always": "always on (baseline)", "never": "never on", "late": "off, on from T", "removed": "on, off from T2"}


def figure(cfg: Config, p: dict, hists: dict, statuses: dict, run_dir) -> None:
    """Train and test accuracy per schedule (seed bands), the switch step marked; parameter norm dotted."""
    fig, ax = plots.subplots(2, 2, figsize=(10.0, 6.0), sharex=True, sharey=True)
    for a, s in zip(ax.flat, SCHEDULES):
        hs = [h for name, h in hists.items() if name.startswith(f"{s}-")]
        plots.seed_band(a, hs, "train_acc", "train", "C0", log_x=False)
        plots.seed_band(a, hs, "test_acc", "test", "C3", log_x=False)
        norm = a.twinx()
        plots.seed_band(norm, hs, "param_norm", "parameter norm", "grey", log_x=False)
        for line in norm.get_lines():
            line.set_linestyle(":")
        norm.set_ylabel("parameter norm (dotted)", fontsize=7)
        norm.grid(False)
        if switch_step(s, p):
            a.axvline(switch_step(s, p), color="black", ls="--", lw=0.9)
        a.set_title(f"{TITLES[s]}: {statuses[s]}", fontsize=9)
        a.set_ylabel("accuracy")
    ax[0, 0].legend(loc="center right", fontsize=8)
    for a in ax[1]:
        a.set_xlabel("step")
    t = cfg.task
    fig.suptitle(f"late weight decay: {cfg.model.arch}, (x {t.op} y) mod {t.p}, frac {t.frac}, {cfg.optim.name} "
                 f"wd {cfg.optim.weight_decay:g} when on; dashed: T = {p['T']} (late), T2 = {p['T2']} (removed); "
                 f"{len(cfg.seeds)} seed(s)", fontsize=9)
    plots.save(fig, run_dir, cfg)
