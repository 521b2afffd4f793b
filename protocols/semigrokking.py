"""Semi-grokking: trained from scratch at D ~ D_crit, delayed generalisation stops at middling test
accuracy (Varma et al. 2023, Fig. 5-6). The paper found it hard to see: the time to grok grows
super-exponentially as D shrinks, and transient semi-grokking (a middling plateau, then full
grokking) is common.

Runs: every training-set size D (params.sizes: fractions of all inputs or counts; or params.multipliers x
D_crit, with D_crit from params.D_crit or else the newest `dcrit` verdict in runs/ for this p and
architecture) x every seed, from scratch, for the budget train.steps (a run ends early once test
accuracy reaches criteria.grok_acc). With CUDA they train as stacked models (params.stack,
circuits.cache.prestack); on a CPU as worker processes.

Classes, after train accuracy first reaches criteria.train_acc: a *plateau* is test accuracy held
inside [band_lo, band_hi] for at least min_plateau_steps, varying by at most max_plateau_spread
(flat: a slow rise through the band is not a plateau).
  grokked     reached grok_acc, no plateau before      transient   a plateau, then grok_acc
  semi        a plateau that lasts to the end           memorised   ends below band_lo
  unresolved  ends between band_lo and grok_acc without a plateau lasting to the end (still moving)
Holds when at least criteria.min_semi_runs runs are semi or transient.
"""
from __future__ import annotations

import os

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from circuits import plots
from circuits.cache import entry_path, prestack, steps_left, trained
from circuits.config import Config, protocol_fields, to_dict
from circuits.detect import Verdict, first_step, plateaus
from circuits.experiment import LIVE, begin, finish, normalised, recorded_config
from circuits.parallel import pmap
from circuits.progress import Bar
from circuits.store import read_json
from circuits.tasks import frac_for, n_inputs, sizes_from
from circuits.train import resolve_device
from circuits.validate import check_at_least, check_optional_bool, check_sizes
from protocols.grokking import sensitivity

NAME = "semigrokking"
CLAIM = "trained at D ~ D_crit, delayed generalisation reaches only middling test accuracy"
DEFAULTS = {"sizes": None, "multipliers": [0.8, 0.9, 1.0, 1.1, 1.25], "D_crit": None, "workers": None, "stack": None}
PARAMS_DOC = {
    "sizes": "training-set sizes: fractions of all inputs (p^2 pairs for x+y) or counts (None: multipliers x D_crit)",
    "multipliers": "sizes as multiples of D_crit when sizes is None",
    "D_crit": "the D_crit to centre on (None: the newest `circuits dcrit` result of the same task, model and optimiser, in runs/dcrit)",
    "workers": "worker processes (None: one per core)",
    "stack": "train the runs as stacked models first (None: on CUDA; on a CPU separate processes are faster)",
}
CRITERIA = {"train_acc": 0.99, "grok_acc": 0.99, "band_lo": 0.2, "band_hi": 0.8, "min_plateau_steps": 1000,
            "max_plateau_spread": 0.15, "min_semi_runs": 1}
CLASSES = ("memorised", "semi", "transient", "grokked", "unresolved")
# neighbouring values of the thresholds for measured.sensitivity (grok_acc only downwards: runs stop there)
SENSITIVITY = {"band_lo": [0.1, 0.2, 0.3], "band_hi": [0.7, 0.8, 0.9], "min_plateau_steps": [500, 1000, 2000],
               "max_plateau_spread": [0.1, 0.15, 0.25], "min_semi_runs": [1, 2], "grok_acc": [0.95, 0.99]}


@dataclass
class Job:
    cfg: Config            # task.frac set so that the training split has exactly `size` pairs
    size: int
    seed: int
    live: str = ""         # a CSV that gets each evaluation row as it comes (run_dir/live/NAME.csv)


SAME_SETUP = {"task": ("frac",), "model": (), "optim": ()}   # sections a D_crit depends on, less keys it does not


def same_setup(recorded: dict, cfg: Config) -> bool:
    """Whether a recorded run's config (experiment.recorded_config) is the setup cfg asks about: the
    same task (its training fraction aside: a from-scratch sweep sets its own), model and optimiser."""
    mine = normalised(to_dict(cfg))
    strip = lambda d, sec: {k: v for k, v in (d.get(sec) or {}).items() if k not in SAME_SETUP[sec]}  # noqa: E731
    return all(strip(recorded, sec) == strip(mine, sec) for sec in SAME_SETUP)


def dcrit_from_store(cfg: Config, root: str | Path = "runs") -> tuple[float, str] | None:
    """(D_crit, its run directory) of the newest `dcrit` run in the store that measured this setup
    (`same_setup`: a D_crit of another model, optimiser or task is never read); None if there is none."""
    best = None
    for path in Path(root).glob("dcrit/*/verdict.json"):
        run = recorded_config(path.parent)
        m = read_json(path).get("measured", {})
        if run is not None and m.get("D_crit") and same_setup(run, cfg):
            if best is None or path.stat().st_mtime > best[0]:
                best = (path.stat().st_mtime, float(m["D_crit"]), str(path.parent))
    return best[1:] if best else None


def validate(cfg: Config) -> None:
    """Its params' ranges, before anything trains (circuits.validate.validate_run): one line each."""
    p, n_all = protocol_fields(cfg.params, DEFAULTS, "params"), n_inputs(cfg.task)
    if p["sizes"]:                                       # a run from scratch keeps a test split
        check_sizes(p["sizes"], "params.sizes", n_all, n_all - 1, f"all {n_all} inputs less one: a run keeps a test split")
    check_at_least(p["multipliers"], "params.multipliers", 0, strict=True)
    if p["D_crit"] is not None:
        check_at_least(p["D_crit"], "params.D_crit", 0, strict=True)
    check_optional_bool(p["stack"], "params.stack")


def sizes_for(cfg: Config, p: dict) -> tuple[list[int], float | None, str]:
    n_all = n_inputs(cfg.task)
    if p["sizes"]:
        return sizes_from(p["sizes"], n_all), None, "params.sizes"
    d_crit, source = p["D_crit"], "params.D_crit"
    if d_crit is None:
        found = dcrit_from_store(cfg)
        if found is None:
            from circuits.errors import CircuitsError
            raise CircuitsError("semigrokking needs params.sizes, params.D_crit or a `circuits dcrit` result for this "
                                "setup (the same task, model and optimiser) in runs/dcrit")
        d_crit, source = found
    return sorted({int(round(m * d_crit)) for m in p["multipliers"]}), d_crit, source


def scratch(job: Job) -> list[dict]:
    """Train from scratch on `size` pairs until test accuracy reaches grok_acc or the budget ends; the
    history of evaluations. The run goes through the trained-circuit cache (circuits/cache.py): a
    killed run resumes from its checkpoint, and any protocol asking for the same run reads it back."""
    stop, name = stop_rule(job.cfg)
    t, _ = trained(job.cfg, job.seed, stop=stop, stop_name=name, quiet=True, live=job.live)
    return t.result.history


def stop_rule(cfg: Config):
    """(stop, its name): a run from scratch ends once train and test accuracy reach the criteria."""
    crit = protocol_fields(cfg.criteria, CRITERIA, "criteria")
    return (lambda row: row["train_acc"] >= crit["train_acc"] and row.get("test_acc", 0.0) >= crit["grok_acc"],
            stop_name(crit))


def stop_name(crit: dict) -> str:
    return f"train-{crit['train_acc']}-test-{crit['grok_acc']}"


def job_name(job: Job, prefix: str = "") -> str:
    """A run's name in metrics.csv, networks/ and live/ (prefix: the caller's, e.g. dcrit's method)."""
    return f"{prefix}D{job.size}-seed{job.seed}"


def networks(jobs: list[Job], prefix: str = "") -> dict:
    """name (job_name) -> cache file of every run from scratch (for the run's networks/)."""
    return {job_name(j, prefix): entry(j) for j in jobs}


def entry(job: Job) -> Path:
    """The run's network in the trained-circuit cache (there once it has finished)."""
    return entry_path(job.cfg, job.seed, stop_name(protocol_fields(job.cfg.criteria, CRITERIA, "criteria")))


def steps_to_train(job: Job) -> int:
    """The steps the run still has to train at most (circuits.cache.steps_left): for a time bound."""
    return steps_left(job.cfg, job.seed, stop_name(protocol_fields(job.cfg.criteria, CRITERIA, "criteria")))


def live_to(jobs: list[Job], live_dir: Path, prefix: str = "") -> list[Job]:
    """Each job appends its evaluation rows to live_dir/NAME.csv as they come (names as networks())."""
    for j in jobs:
        j.live = str(Path(live_dir) / f"{job_name(j, prefix)}.csv")
    return jobs


def scratch_jobs(cfg: Config, sizes: list[int]) -> list[Job]:
    """One run from scratch per size x seed, with exactly `size` training pairs (also the from-scratch
    sweep of `circuits dcrit --method sweep`)."""
    n_all = n_inputs(cfg.task)
    jobs = []
    for size in sizes:
        for seed in cfg.seeds:
            c = replace(cfg, task=replace(cfg.task, frac=frac_for(size, n_all)))
            jobs.append(Job(c, size, seed))
    return jobs


def budget(cfg: Config) -> list[tuple[int, int, int]]:
    """Every run from scratch not finished yet, at its step cap, for the run's time bound (circuits.estimate)."""
    p = protocol_fields(cfg.params, DEFAULTS, "params")
    workers = p["workers"] or os.cpu_count() or 1
    return [(j.size, left, workers) for j in scratch_jobs(cfg, sizes_for(cfg, p)[0]) if (left := steps_to_train(j))]


def run_scratch(jobs: list[Job], workers: int | None, label: str, stack: bool | None = None) -> list[list[dict]]:
    """The runs' histories, in order. With stack (None: when they train on CUDA), the runs that can
    share a stacked model train as one first, into the cache (circuits.cache.prestack), and are read
    back from it; what is left (part-trained, unstackable) trains in worker processes."""
    if stack is None:
        stack = bool(jobs) and resolve_device(jobs[0].cfg.train.device).type == "cuda"
    if stack:
        sbar = Bar(f"{label}: stacked runs from scratch")
        prestack([(j.cfg, j.seed, *stop_rule(j.cfg), j.live) for j in jobs], sbar)
        sbar.close()
    bar = Bar(f"{label}: {len(jobs)} runs from scratch")
    hists = pmap(scratch, jobs, workers, on_done=bar)
    bar.close()
    return hists


def classify(history: list[dict], crit: dict) -> tuple[str, list[tuple[int, int]]]:
    t_fit = first_step(history, "train_acc", crit["train_acc"])
    final = history[-1].get("test_acc", 0.0)
    if t_fit is None:
        return ("memorised" if final < crit["band_lo"] else "unresolved"), []
    held = plateaus(history, "test_acc", crit["band_lo"], crit["band_hi"], crit["min_plateau_steps"], after=t_fit,
                    max_spread=crit["max_plateau_spread"])
    if final >= crit["grok_acc"]:
        return ("transient" if held else "grokked"), held
    if held and held[-1][1] == history[-1]["step"]:
        return "semi", held
    return ("memorised" if final < crit["band_lo"] else "unresolved"), held


def judge(histories: list[list[dict]], crit: dict) -> str:
    """The verdict from the runs' histories (pure): holds when at least criteria.min_semi_runs runs are
    semi or transient (classify), fails otherwise."""
    n_semi = sum(classify(h, crit)[0] in ("semi", "transient") for h in histories)
    return "holds" if n_semi >= crit["min_semi_runs"] else "fails"


def run(cfg: Config, run_dir) -> Verdict:
    p = protocol_fields(cfg.params, DEFAULTS, "params")
    crit = protocol_fields(cfg.criteria, CRITERIA, "criteria")
    sizes, d_crit, source = sizes_for(cfg, p)
    started = begin(cfg, run_dir)
    n_all = n_inputs(cfg.task)
    jobs = live_to(scratch_jobs(cfg, sizes), Path(run_dir) / LIVE)
    hists = run_scratch(jobs, p["workers"], f"semigrokking {cfg.model.arch}", p["stack"])
    outcomes = [classify(h, crit) for h in hists]
    per_size = {}
    for size in sizes:
        cls = [c for j, (c, _) in zip(jobs, outcomes) if j.size == size]
        per_size[size] = {"D": size, "frac_of_p2": size / n_all, **{k: cls.count(k) / len(cls) for k in CLASSES},
                          "final_test_acc": [h[-1].get("test_acc") for j, h in zip(jobs, hists) if j.size == size]}
    runs = [{"D": j.size, "seed": j.seed, "class": c, "plateaus": pl, "steps": h[-1]["step"],
             "final_test_acc": h[-1].get("test_acc")} for j, (c, pl), h in zip(jobs, outcomes, hists)]
    n_semi = sum(c in ("semi", "transient") for c, _ in outcomes)
    measured = {"D_crit_used": d_crit, "D_crit_source": source, "n_runs": len(jobs), "n_semi_or_transient": n_semi,
                **{f"n_{k}": sum(c == k for c, _ in outcomes) for k in CLASSES}, "per_size": per_size, "runs": runs,
                "sensitivity": sensitivity(lambda c: judge(hists, c), crit, SENSITIVITY)}
    status = judge(hists, crit)
    verdict = Verdict(NAME, CLAIM, status, measured, crit, seeds=list(cfg.seeds))
    figure(cfg, jobs, hists, outcomes, crit, run_dir)
    return finish(cfg, run_dir, verdict, {job_name(j): h for j, h in zip(jobs, hists)}, started,
                  networks(jobs))


def figure(cfg: Config, jobs, hists, outcomes, crit: dict, run_dir) -> None:
    fig, ax = plots.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    curves, strip = ax[0, 0], ax[0, 1]
    sizes = sorted({j.size for j in jobs})
    cmap = plots.plt.get_cmap("viridis")
    colour = {s: cmap(i / max(len(sizes) - 1, 1)) for i, s in enumerate(sizes)}
    for j, h, (cls, held) in zip(jobs, hists, outcomes):
        steps = [r["step"] + 1 for r in h]
        curves.plot(steps, [r.get("test_acc", np.nan) for r in h], color=colour[j.size], lw=1,
                    label=f"D={j.size}" if j.seed == jobs[0].seed else None)
        for a, b in held:
            curves.axvspan(a + 1, b + 1, color=colour[j.size], alpha=0.08)
    curves.axhspan(crit["band_lo"], crit["band_hi"], color="grey", alpha=0.06)
    curves.set(xscale="log", xlabel="step (+1)", ylabel="test accuracy",
               title=f"semi-grokking: {cfg.model.arch}, p={cfg.task.p} (shaded: plateaus in the middling band)")
    curves.legend(fontsize=7, ncol=2)
    rng = np.random.default_rng(0)
    for j, (cls, _) in zip(jobs, outcomes):
        strip.scatter(j.size, CLASSES.index(cls) + rng.uniform(-0.15, 0.15), color=colour[j.size], s=25)
    strip.set(yticks=range(len(CLASSES)), yticklabels=CLASSES, xlabel="D (training pairs)", title="outcome per run",
              ylim=(-0.5, len(CLASSES) - 0.5))
    plots.save(fig, run_dir, cfg)
