"""The subset runs of ungrokking (protocols/ungrokking.py): one job per (grokked network, weight
decay, D', subset seed), its settle rule, and the plan that runs them, all at once or adaptively
(a coarse pass over a few subset seeds, then the others near the transition only)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from circuits.cache import continue_checkpoint
from circuits.config import Config
from circuits.detect import settle_stop, settle_window
from circuits.experiment import build, live_progress, setup
from circuits.parallel import pmap
from circuits.progress import Bar
from circuits.store import is_locked, load_torch, read_json, write_json
from circuits.tasks import nested_subset, sizes_from
from circuits.train import Phase, checkpoint_fingerprint, train


@dataclass
class Job:
    cfg: Config
    seed: int              # the grokked network's seed
    model_path: str        # its cache file
    size: int              # D'
    subset_seed: int
    weight_decay: float
    steps: int             # the step cap
    eval_every: int
    checkpoint: str
    settle: dict | None = None   # settle_params(): stop once settled (None: run to the cap)
    live: str = ""               # a CSV that gets each evaluation row as it comes (run_dir/live/NAME.csv)
    other_caps: tuple = ()       # ((cap, checkpoint), ...): this run under other step caps (see `same_run`)
    caps_index: str = ""         # a JSON list of the step caps this run has finished under in this cache

    @property
    def name(self) -> str:
        return f"seed{self.seed}-wd{self.weight_decay:g}-D{self.size}-s{self.subset_seed}"


def subset_size(x: float, n_all: int, n_train: int) -> int:
    """A size given as a fraction of all n_all inputs (x <= 1) or as a count; at most the training
    split (a validated run never asks for more: `ungrokking.validate`)."""
    return max(1, min(sizes_from([x], n_all)[0], n_train))


def ungrok(job: Job) -> list[dict]:
    """Continue the grokked network on its nested subset; the history of evaluations. A finished
    run leaves its history in `record_path` beside its checkpoint, which is read back first: a
    few kB that a long sweep can keep (commit) without the checkpoints' weights. Else, where the
    same run finished under another step cap (`job.other_caps`: the other weight-decay convention's,
    or any cap its caps index lists) and that decides this one (`same_run`), it is read from there
    and nothing is trained."""
    hist = recorded(job)
    if hist is not None:
        return hist
    cfg = job.cfg
    device = setup(cfg)
    model, data = build(cfg, job.seed, device)
    model.load_state_dict(load_torch(job.model_path)["model"])
    sub = nested_subset(data.train_idx, job.size, job.subset_seed)
    tcfg = replace(cfg.train, steps=job.steps, eval_every=job.eval_every)

    def phase(steps: int) -> Phase:
        return Phase(steps, train_idx=sub, weight_decay=job.weight_decay, fresh_optimizer=True)

    start = capped_start(job)
    if start is not None and not Path(job.checkpoint).exists():      # continue where it hit a smaller cap
        cap, ck = start
        fp = partial(checkpoint_fingerprint, model, data, cfg.optim, seed=job.subset_seed)
        continue_checkpoint(Path(ck), fp(replace(tcfg, steps=cap), [phase(cap)]), cap, Path(job.checkpoint),
                            fp(tcfg, [phase(job.steps)]), f"{job.name} from its {cap}-step cap to {job.steps} steps")
    res = train(model, data, cfg.optim, tcfg, phases=[phase(job.steps)],
                stop=settle_rule(job), checkpoint=job.checkpoint, seed=job.subset_seed,
                progress=live_progress(None, job.live))
    if record_path(job):
        write_json(record_path(job), {"job": job.name, "status": res.status, "history": res.history})
        note_cap(job)
    return res.history


def recorded(job: Job) -> list[dict] | None:
    """The job's history if a finished run already decides it (its own record, or the same run under
    another cap: `same_run`); None: it has to train."""
    own = read_record(record_path(job), job.name)
    if own is not None:
        note_cap(job)
        return own[0]
    for cap, ck in job.other_caps:
        hist = same_run(read_record(record_path(replace(job, checkpoint=ck)), job.name), cap, job.steps)
        if hist is not None:
            return hist
    return None


def capped_start(job: Job) -> tuple[int, str] | None:
    """(cap, checkpoint) of the same run under the largest smaller cap that it hit (its record: run
    to that cap, an evaluation step), its final checkpoint kept: this run continues from there.
    None: it starts at step 0 (or from its own checkpoint)."""
    best = None
    for cap, ck in job.other_caps:
        rec = read_record(record_path(replace(job, checkpoint=ck)), job.name)
        hit = rec is not None and rec[1] == "done" and bool(rec[0]) and rec[0][-1]["step"] == cap
        if hit and cap < job.steps and cap % job.eval_every == 0 and Path(ck).exists() and (best is None or cap > best[0]):
            best = (cap, ck)
    return best


def steps_to_train(job: Job) -> int:
    """The steps the job still has to train at most (for a time bound; 0: a record decides it)."""
    if recorded(job) is not None:
        return 0
    start = capped_start(job)
    return job.steps - (start[0] if start is not None else 0)


def known_caps(job: Job) -> list[int]:
    """The step caps under which this run has finished in this cache (`job.caps_index`; none: [])."""
    try:
        return [int(c) for c in read_json(job.caps_index)] if job.caps_index else []
    except (OSError, ValueError, TypeError):
        return []                                                   # no index, or unreadable: the config's caps only


def note_cap(job: Job) -> None:
    """Add job.steps to its run's caps index, so a later config with another cap finds this record
    (a lost concurrent update, or a cache it cannot write, only costs reuse: `same_run` still decides
    what a record is worth)."""
    caps = known_caps(job)
    if job.caps_index and job.steps not in caps:
        try:
            write_json(job.caps_index, sorted({*caps, job.steps}))
        except OSError:
            pass                                                    # a read-only cache: reuse across caps is lost, nothing else


def network_of(job: Job) -> Path | None:
    """The file with the job's final weights: its checkpoint once its own record says it finished. A
    run read from another cap's record has none (its checkpoint, if any, is of an unfinished try)."""
    return Path(job.checkpoint) if read_record(record_path(job), job.name) is not None else None


def read_record(path: Path | None, name: str) -> tuple[list[dict], str | None] | None:
    """(history, status) of a finished run of job `name` recorded at path (None: none, another job's,
    unreadable)."""
    if not path or not path.exists():
        return None
    try:
        rec = read_json(path)
        return (rec["history"], rec.get("status")) if rec.get("job") == name else None
    except (OSError, ValueError, KeyError, AttributeError):
        return None                                                 # unreadable: train (resume) again


def same_run(record: tuple[list[dict], str | None] | None, cap: int, steps: int) -> list[dict] | None:
    """The history of a run with step cap `steps`, from the record of the same run under cap `cap`.
    Training never reads its cap and the stop rule sees the same rows in the same order, so a larger
    cap's history cut at `steps` is this run's (`prefix`), and a smaller cap's run that stopped by its
    rule (status stopped or diverged, not "done" at its cap) is this run whole. None: it cannot tell."""
    if record is None:
        return None
    history, status = record
    if cap > steps:
        return prefix(history, steps)
    return history if history and status in ("stopped", "diverged") else None


def prefix(history: list[dict] | None, cap: int) -> list[dict] | None:
    """The history the same run would give with step cap `cap`, from its history under a larger cap:
    all of it if it stopped by `cap`, else its rows up to `cap` when one was evaluated at `cap` (the
    capped run's last evaluation); None when it cannot tell (no history, or no evaluation at `cap`)."""
    if not history:
        return None
    if history[-1]["step"] <= cap:
        return history
    cut = [r for r in history if r["step"] <= cap]
    return cut if cut and cut[-1]["step"] == cap else None


def record_path(job: Job) -> Path | None:
    """Where a finished job's history is kept: history.json in its checkpoint's folder (a folder
    named by a hash of all that decides the run, as the checkpoint is)."""
    return Path(job.checkpoint).with_name("history.json") if job.checkpoint else None


def being_trained(job: Job) -> bool:
    """Is another process training this job's checkpoint now (`circuits dcrit` beside `circuits run
    ungrokking`)? Then pmap does other jobs first and reads this one back later."""
    ck = Path(job.checkpoint)
    return bool(job.checkpoint) and is_locked(ck.parent / f".{ck.name}.lock")


def settle_rule(job: Job):
    """The stop rule of a job that stops once settled (None: it runs to its cap): test accuracy
    moved at most settle.acc_tol over the last settle.decay_times decay times, or held an end state
    (settle.end = [lo, hi]) for settle.end_decay_times decay times."""
    if not job.settle:
        return None
    lr, s = job.cfg.optim.lr, job.settle
    end = (settle_window(lr, job.weight_decay, s["end_decay_times"]), *s["end"]) if s.get("end") else None
    return settle_stop(settle_window(lr, job.weight_decay, s["decay_times"]), s["acc_tol"], end=end)


def settle_params(p: dict) -> dict | None:
    """The settle rule's numbers (part of a job's cache key; the end state only when it is on)."""
    if not p["stop_when_settled"]:
        return None
    out = {"decay_times": p["settle_decay_times"], "acc_tol": p["settle_acc_tol"]}
    if p["end_states"]:
        out.update(end=[None if x is None else float(x) for x in p["end_states"]], end_decay_times=p["end_decay_times"])
    return out


def bracket(sizes_acc: dict[int, float], crit: dict) -> set[int]:
    """The sizes the non-coarse seeds run at, from the coarse runs' mean final test accuracy per size:
    those in transition (between criteria.smallest_test_acc_max and largest_test_acc_min) and the
    nearest size on either side, so every seed's runs span the transition (its own fit, and the seed
    bootstrap, stay well posed). No size in transition: the pair around accuracy 0.5 (a jump) and one
    size either side, else every size (no transition seen: nothing to save safely)."""
    sizes = sorted(sizes_acc)
    lo, hi = crit["smallest_test_acc_max"], crit["largest_test_acc_min"]
    mid = [i for i, d in enumerate(sizes) if lo <= sizes_acc[d] < hi]
    if not mid:
        jump = [i for i in range(len(sizes) - 1) if sizes_acc[sizes[i]] < 0.5 <= sizes_acc[sizes[i + 1]]]
        mid = [jump[0], jump[0] + 1] if jump else list(range(len(sizes)))
    return set(sizes[max(0, min(mid) - 1): max(mid) + 2])


def adaptive_plan(jobs: list[Job], coarse_hists: dict[str, list[dict]], coarse: set[int], crit: dict):
    """(the jobs the second pass runs, {grok seed: {wd: sizes near the transition}}) after a coarse
    pass over the subset seeds in `coarse` (coarse_hists: their histories by job name)."""
    near: dict[int, dict[float, set[int]]] = {}
    for seed, wd in sorted({(j.seed, j.weight_decay) for j in jobs}):
        done = [j for j in jobs if j.seed == seed and j.weight_decay == wd and j.subset_seed in coarse]
        acc = {d: statistics.mean(coarse_hists[j.name][-1]["test_acc"] for j in done if j.size == d)
               for d in {j.size for j in done}}
        near.setdefault(seed, {})[wd] = bracket(acc, crit)
    rest = [j for j in jobs if j.subset_seed not in coarse and j.size in near[j.seed][j.weight_decay]]
    return rest, near


def planned(jobs: list[Job], p: dict, crit: dict) -> list[Job]:
    """The jobs a run may still train, for its time bound: with params.coarse_seeds, a (grok seed, wd)
    group whose coarse runs have all finished keeps only the sizes its second pass will run
    (`adaptive_plan`); every job of the other groups stays (what they will need is not known yet)."""
    seeds, k = sorted(p["subset_seeds"]), p["coarse_seeds"] or 0
    if not 0 < k < len(seeds):
        return jobs
    coarse = set(seeds[:k])
    hists = {j.name: recorded(j) for j in jobs if j.subset_seed in coarse}
    group = lambda j: (j.seed, j.weight_decay)                                # noqa: E731
    open_groups = {group(j) for j in jobs if j.subset_seed in coarse and hists[j.name] is None}
    rest, _ = adaptive_plan([j for j in jobs if group(j) not in open_groups], hists, coarse, crit)
    second = {j.name for j in rest}
    return [j for j in jobs if group(j) in open_groups or j.subset_seed in coarse or j.name in second]


def run_jobs(jobs: list[Job], cfg: Config, p: dict, crit: dict) -> tuple[list[Job], list[list[dict]], dict | None]:
    """Train the subset runs: all of them, or (params.coarse_seeds = k, fewer than the subset seeds)
    a coarse pass with the first k subset seeds, then the others near the transition only."""
    arch, subset_seeds = cfg.model.arch, sorted(p["subset_seeds"])
    k = p["coarse_seeds"] or 0
    if not 0 < k < len(subset_seeds):
        bar = Bar(f"ungrokking {arch}: {len(jobs)} runs on nested subsets")
        hists = pmap(ungrok, jobs, p["workers"], on_done=bar, busy=being_trained)
        bar.close()
        return jobs, hists, None
    coarse = set(subset_seeds[:k])
    first = [j for j in jobs if j.subset_seed in coarse]
    bar = Bar(f"ungrokking {arch}: coarse pass, {len(first)} runs (subset seeds {sorted(coarse)})")
    h1 = pmap(ungrok, first, p["workers"], on_done=bar, busy=being_trained)
    bar.close()
    rest, near = adaptive_plan(jobs, {j.name: h for j, h in zip(first, h1)}, coarse, crit)
    bar = Bar(f"ungrokking {arch}: {len(rest)} runs near the transition")
    h2 = pmap(ungrok, rest, p["workers"], on_done=bar, busy=being_trained)
    bar.close()
    done = dict(zip([j.name for j in first + rest], h1 + h2))
    ran = [j for j in jobs if j.name in done]                        # the grid's order
    plan = {"coarse_seeds": sorted(coarse), "runs": len(ran), "runs_in_full_grid": len(jobs),
            "sizes_near_transition": {f"seed{seed}-wd{wd:g}": sorted(sz) for seed, per in near.items()
                                      for wd, sz in per.items()}}
    return ran, [done[j.name] for j in ran], plan
