"""Efficiency: at a fixed correct-class logit, C_mem's parameter norm rises with the training-set size
D while C_gen's stays flat; the two norm-vs-D curves cross at D_crit (Varma et al. 2023, Sec. 4).

Circuits in isolation, one network each (kept in the trained-circuit cache, circuits/cache.py):
  C_mem at size D: trained on D pairs with *random* labels (nothing to generalise: all its norm is
    memorisation), for params.steps steps with the config's weight decay;
  C_gen at size D: trained on D true-label pairs where it generalises (D >= the from-scratch
    threshold), for params.gen_steps steps; a network whose final test accuracy is below
    criteria.gen_test_acc_min is not a C_gen network and is left out (reported).
Both run to (near) the weight-decay equilibrium, so the init's random weights are gone: for the
step budget, or (params.stop_when_settled, compute-aware) until their parameter norm and mean
correct-class train logit each moved at most params.settle_norm_tol (relative) over the last
params.settle_decay_times decay times 1 / (lr wd), with the budget as a cap; every network records
whether it settled (measured.n_settled, hit_step_cap). Along
training the parameter norm and the mean correct-class train logit are recorded (the norm-vs-logit
curves). The *norm at the target logit* (params.target_logit) of a trained network is read by
rescaling it: all parameters times c, the smallest c at which the mean correct-class train logit
reaches the target; norm at target = c * norm. This compares circuits at one logit without assuming
how logits scale with the norm; the measured log-slope d log logit / d log c is reported as kappa
(the paper's exponent: a kappa-layer ReLU network without biases has kappa = its depth).

Claims judged (each in measured.claims; the status combines them), on the exponents b of power laws
norm ~ D^b fitted to each family, with 95% bootstrap intervals over seeds from >= 5 seeds (fewer:
seed ranges, not gated on; circuits/fit.py):
  C_mem rises     its exponent lies above the flat band [-criteria.gen_exponent_band, +band];
  C_gen flat      its exponent lies within the band, over a range of D at least as wide in ln D as
                  C_mem's (a narrower range: inconclusive);
  C_gen below     C_gen's exponent lies clearly below C_mem's (intervals apart; without intervals the
                  point exponents more than the band apart).
The efficiency estimate of D_crit is where the C_mem power law meets the C_gen level (the geometric
mean of the C_gen norms), with its interval (`extrapolated` when it lies outside the C_mem sizes).
measured.sensitivity re-judges the three claims (combined) at 0.5x-2x the band.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call
from scipy.stats import spearmanr

from circuits import plots
from circuits.cache import entry_path, steps_left, trained
from circuits.config import Config, protocol_fields
from circuits.detect import Verdict, claims_from, combine, settle_stop, settle_window, settled
from circuits.fit import Estimate, below, inside, over_seeds, sensitivity, status
from circuits.experiment import LIVE, begin, finish
from circuits.metrics import correct_logit, param_norm
from circuits.parallel import pmap
from circuits.progress import Bar
from circuits.tasks import frac_for, n_inputs, sizes_from
from circuits.validate import check_at_least, check_sizes

NAME = "efficiency"
CLAIM = "at a fixed logit C_mem's parameter norm rises with D while C_gen's stays flat; they cross at D_crit"
DEFAULTS = {"mem_sizes": [0.05, 0.1, 0.2, 0.3, 0.4], "gen_sizes": [0.45, 0.6, 0.8], "target_logit": 20.0,
            "steps": 3000, "gen_steps": None, "eval_every": 100, "n_boot": 500, "workers": None,
            "stop_when_settled": False, "settle_decay_times": 3.0, "settle_norm_tol": 0.01}
PARAMS_DOC = {
    "mem_sizes": "C_mem sizes D (random labels): fractions of all inputs (p^2 pairs for x+y; <= 1) or counts",
    "gen_sizes": "C_gen sizes D (true labels, above the from-scratch threshold)",
    "target_logit": "the mean correct-class train logit at which norms are compared",
    "steps": "step budget (the cap) of a C_mem network",
    "gen_steps": "step budget of a C_gen network (None: steps)",
    "eval_every": "steps between evaluations",
    "n_boot": "bootstrap resamples of the seeds for the intervals",
    "workers": "worker processes (None: one per core)",
    "stop_when_settled": "stop a network once its norm and train logit are steady (else the whole budget)",
    "settle_decay_times": "settle window in decay times 1 / (lr wd)",
    "settle_norm_tol": "steady: each moved at most this fraction over the window",
}
SETTLE_KEYS = ("param_norm", "train_logit")    # what must be steady for a network to count as settled
CRITERIA = {"gen_exponent_band": 0.1, "gen_test_acc_min": 0.99, "mem_train_acc_min": 0.99}

MEM_RISES = "C_mem's parameter norm at a fixed logit rises with D (exponent above the flat band)"
GEN_FLAT = "C_gen's parameter norm at a fixed logit is flat in D (exponent within the flat band)"
GEN_BELOW = "C_gen's exponent lies clearly below C_mem's"
RANGE_SLACK = 0.01     # ln D: C_gen's range counts as wide as C_mem's up to the rounding of sizes to whole pairs


@dataclass
class Job:
    cfg: Config        # task.frac gives exactly `size` training pairs; random labels for C_mem
    kind: str          # "mem" | "gen"
    size: int
    seed: int
    target: float
    window: float            # settle_decay_times decay times, in steps
    norm_tol: float
    stop_when_settled: bool
    live: str = ""           # a CSV that gets each evaluation row as it comes (run_dir/live/NAME.csv)

    @property
    def stop_name(self) -> str:
        """The cache entry's stop rule: the whole budget, or until settled (its own entry)."""
        return f"settled-{self.window:g}-{self.norm_tol:g}" if self.stop_when_settled else "budget"


def validate(cfg: Config) -> None:
    """Its params' ranges, before anything trains (circuits.validate.validate_run): one line each."""
    p, n_all = protocol_fields(cfg.params, DEFAULTS, "params"), n_inputs(cfg.task)
    for key in ("mem_sizes", "gen_sizes"):               # each network keeps a test split (a C_gen is judged on it)
        check_sizes(p[key], f"params.{key}", n_all, n_all - 1, f"all {n_all} inputs less one: a network keeps a test split")
    check_at_least(p["target_logit"], "params.target_logit", 0, strict=True)
    for key in ("steps", "eval_every") + (("gen_steps",) if p["gen_steps"] is not None else ()):
        check_at_least(p[key], f"params.{key}", 1)
    for key in ("settle_decay_times", "settle_norm_tol"):
        check_at_least(p[key], f"params.{key}", 0, strict=True)


def jobs_for(cfg: Config) -> list[Job]:
    p = protocol_fields(cfg.params, DEFAULTS, "params")
    window = settle_window(cfg.optim.lr, cfg.optim.weight_decay, p["settle_decay_times"])
    out = []
    for seed in cfg.seeds:          # seed-major: a run cut off leaves whole seeds, usable with --set seeds=[...]
        for kind, xs, steps in (("mem", p["mem_sizes"], p["steps"]), ("gen", p["gen_sizes"], p["gen_steps"] or p["steps"])):
            for size in sizes_from(xs, n_inputs(cfg.task)):
                task = replace(cfg.task, frac=frac_for(size, n_inputs(cfg.task)), random_labels=kind == "mem")
                train = replace(cfg.train, steps=steps, eval_every=p["eval_every"])
                out.append(Job(replace(cfg, task=task, train=train), kind, size, seed, p["target_logit"], window,
                               p["settle_norm_tol"], p["stop_when_settled"]))
    return out


@torch.no_grad()
def logit_at_scale(model, data, c: float) -> float:
    """Mean correct-class train logit of the network with every parameter multiplied by c (the
    network itself is not touched; evaluated as in eval mode)."""
    was_training = model.training
    model.eval()
    scaled = {k: c * w for k, w in model.named_parameters()}
    logits = functional_call(model, scaled, (data.tokens[data.train_idx],))      # [n_train, d_vocab]
    model.train(was_training)
    return correct_logit(logits, data.labels[data.train_idx]).mean().item()


def norm_at_logit(model, data, target: float, lo: float = 1e-2, hi: float = 1e2, iters: int = 40) -> dict:
    """Rescale the network to reach `target`: {norm_at_target, scale, logit, kappa}. Bisection on ln c
    for the smallest c with logit(c) >= target (logit(c) rises with c for these networks)."""
    logit = logit_at_scale(model, data, 1.0)
    eps = 1e-3
    up, down = logit_at_scale(model, data, 1 + eps), logit_at_scale(model, data, 1 - eps)
    kappa = (np.log(up) - np.log(down)) / (np.log(1 + eps) - np.log(1 - eps)) if up > 0 and down > 0 else None
    if logit_at_scale(model, data, hi) < target:
        return {"norm_at_target": None, "scale": None, "logit": logit, "kappa": kappa}
    a, b = np.log(lo), np.log(hi)
    for _ in range(iters):
        mid = (a + b) / 2
        a, b = (mid, b) if logit_at_scale(model, data, float(np.exp(mid))) < target else (a, mid)
    c = float(np.exp(b))
    return {"norm_at_target": c * param_norm(model), "scale": c, "logit": logit, "kappa": kappa}


def network_name(job) -> str:
    """A network's name (as in metrics.csv) from its Job or its measured row."""
    kind, size, seed = (job.kind, job.size, job.seed) if isinstance(job, Job) else (job["kind"], job["D"], job["seed"])
    return f"{kind}-D{size}-seed{seed}"


def networks(cfg: Config, prefix: str = "") -> dict:
    """name -> cache file of every circuit network of cfg (for the run directory's networks/)."""
    return {prefix + network_name(j): entry_path(j.cfg, j.seed, j.stop_name) for j in jobs_for(cfg)}


def train_circuit(job: Job) -> dict:
    """Train (or load from the cache) one circuit network and measure it."""
    stop = settle_stop(job.window, job.norm_tol, SETTLE_KEYS, relative=True) if job.stop_when_settled else None
    t, _ = trained(job.cfg, job.seed, stop=stop, stop_name=job.stop_name, quiet=True,
                   label=f"C_{job.kind} D={job.size} seed {job.seed}", live=job.live)
    h = t.result.history
    return {"kind": job.kind, "D": job.size, "seed": job.seed, "steps": h[-1]["step"], "step_cap": job.cfg.train.steps,
            "settled": all(settled(h, job.window, job.norm_tol, k, relative=True) for k in SETTLE_KEYS),
            "final_train_acc": h[-1]["train_acc"],
            "final_test_acc": h[-1].get("test_acc"), "final_norm": h[-1]["param_norm"],
            "curve": [(r["step"], r["param_norm"], r["train_logit"]) for r in h],
            **norm_at_logit(t.model, t.data, job.target)}


def usable(r: dict, crit: dict) -> bool:
    if r["norm_at_target"] is None or r["final_train_acc"] < crit["mem_train_acc_min"]:
        return False
    return r["kind"] == "mem" or (r["final_test_acc"] or 0.0) >= crit["gen_test_acc_min"]


def line(D, norm) -> tuple[float, float]:
    """Least squares ln norm = a + b ln D (a power law norm ~ D^b): (a, b)."""
    b, a = np.polyfit(np.log(np.asarray(D, float)), np.log(np.asarray(norm, float)), 1)
    return float(a), float(b)


def level(gen: list[dict]) -> float:
    """The C_gen norm: the geometric mean over its networks."""
    return float(np.exp(np.mean(np.log([r["norm_at_target"] for r in gen]))))


def crossing(mem: list[dict], gen: list[dict]) -> float | None:
    """D where the C_mem power law meets the C_gen level (None if the C_mem norm does not rise)."""
    if len({r["D"] for r in mem}) < 2 or not gen:
        return None
    a, b = line([r["D"] for r in mem], [r["norm_at_target"] for r in mem])
    if b <= 0:
        return None
    return float(np.exp((np.log(level(gen)) - a) / b))


def exponents(rows: list[dict]) -> dict[str, float | None]:
    """The C_mem and C_gen exponents and the crossing of one set of circuits (any seeds)."""
    mem = [r for r in rows if r["kind"] == "mem"]
    gen = [r for r in rows if r["kind"] == "gen"]
    slope = lambda rs: line([r["D"] for r in rs], [r["norm_at_target"] for r in rs])[1] if len({r["D"] for r in rs}) >= 2 else None
    return {"mem": slope(mem), "gen": slope(gen), "D_crit": crossing(mem, gen)}


def log_range(rows: list[dict]) -> float:
    D = [r["D"] for r in rows]
    return float(np.log(max(D) / min(D))) if D else 0.0


def judge(est: dict[str, Estimate], mem_range: float, gen_range: float, crit: dict) -> dict[str, str]:
    """{claim: status} from the exponents (circuits.fit Estimates: intervals from >= 5 seeds).
    C_mem rises: its exponent lies above the flat band [-gen_exponent_band, gen_exponent_band];
    C_gen flat: its exponent lies within the band, measured over a range of D at least as wide in
    ln D as C_mem's (else inconclusive); C_gen below C_mem: the intervals apart (without intervals,
    the point exponents more than the band apart)."""
    band = crit["gen_exponent_band"]
    mem, gen = est["mem"], est["gen"]
    flat = status(inside(gen, -band, band))
    if flat == "holds" and gen_range < mem_range - RANGE_SLACK:
        flat = "inconclusive"                        # a narrower C_gen range cannot show it flatter
    return {MEM_RISES: status(inside(mem, lo=band)) if mem.value is not None else "inconclusive",
            GEN_FLAT: flat if gen.value is not None else "inconclusive",
            GEN_BELOW: status(below(gen, mem, band, relative=False))}


def analyse(results: list[dict], crit: dict, n_boot: int, n_all: int) -> tuple[str, dict]:
    """The verdict's status and measured numbers from the measured circuits (real or synthetic rows:
    kind, D, seed, final_train_acc, final_test_acc, norm_at_target, kappa). n_all: the task's inputs,
    for D_crit as a fraction of them."""
    mem = [r for r in results if r["kind"] == "mem" and usable(r, crit)]
    gen = [r for r in results if r["kind"] == "gen" and usable(r, crit)]
    left_out = [{k: r[k] for k in ("kind", "D", "seed", "final_train_acc", "final_test_acc")}
                for r in results if not usable(r, crit)]
    m = {"n_mem": len(mem), "n_gen": len(gen), "left_out": left_out, "per_size": per_size(results),
         "n_settled": sum(bool(r.get("settled")) for r in results),
         "hit_step_cap": [network_name(r) for r in results if r.get("settled") is False],
         "runs": [{"name": network_name(r), **{k: r[k] for k in ("steps", "step_cap", "settled") if k in r}}
                  for r in results]}
    if len({r["D"] for r in mem}) < 2 or len({r["D"] for r in gen}) < 2:
        claims = {MEM_RISES: "inconclusive", GEN_FLAT: "inconclusive", GEN_BELOW: "inconclusive"}
        return "inconclusive", {**m, "claims": claims_from(claims),
                                "note": "fewer than two sizes of usable C_mem or C_gen networks"}
    est = over_seeds(mem + gen, lambda r: r["seed"], exponents, n_boot)
    mem_range, gen_range = log_range(mem), log_range(gen)
    claims = judge(est, mem_range, gen_range, crit)
    rho = float(spearmanr([r["D"] for r in mem], [r["norm_at_target"] for r in mem]).statistic)
    a, b = line([r["D"] for r in mem], [r["norm_at_target"] for r in mem])
    gb = est["gen"].value
    d_crit = est["D_crit"].value
    m.update({"claims": claims_from(claims),
              "sensitivity": sensitivity(lambda c: judge(est, mem_range, gen_range, c), crit,
                                         {"gen_exponent_band": [MEM_RISES, GEN_FLAT, GEN_BELOW]}),
              "n_seeds": est["mem"].n_seeds, "mem_rank_corr": rho, "mem_exponent": b, "mem_log_intercept": a,
              "mem_exponent_ci": est["mem"].ci, "mem_exponent_est": est["mem"].to_dict(),
              "gen_mean_norm": level(gen), "gen_exponent": gb, "gen_exponent_ci": est["gen"].ci,
              "gen_exponent_est": est["gen"].to_dict(),
              "mem_log_range": mem_range, "gen_log_range": gen_range,
              "gen_rel_change": float(np.exp(abs(gb) * gen_range) - 1),
              "D_crit": d_crit, "D_crit_ci": est["D_crit"].ci, "D_crit_est": est["D_crit"].to_dict(),
              "D_crit_frac": d_crit / n_all if d_crit else None,
              "extrapolated": None if d_crit is None else not min(r["D"] for r in mem) <= d_crit <= max(r["D"] for r in mem),
              "kappa_median": statistics.median([r["kappa"] for r in mem + gen if r.get("kappa") is not None] or [float("nan")])})
    m["estimates"] = est                     # Estimate objects, for `dcrit` (dropped before the verdict is written)
    return combine(list(claims.values())), m


def per_size(rows: list[dict]) -> dict:
    out = {}
    for kind in ("mem", "gen"):
        for D in sorted({r["D"] for r in rows if r["kind"] == kind}):
            sel = [r for r in rows if r["kind"] == kind and r["D"] == D]
            out[f"{kind}-{D}"] = {"norm_at_target": [r["norm_at_target"] for r in sel],
                                  "logit": [r["logit"] for r in sel], "final_norm": [r["final_norm"] for r in sel],
                                  "kappa": [r["kappa"] for r in sel]}
    return out


def budget(cfg: Config) -> list[tuple[int, int, int]]:
    """Every circuit network not in the cache yet, at its step cap, for the run's time bound (circuits.estimate)."""
    workers = protocol_fields(cfg.params, DEFAULTS, "params")["workers"] or os.cpu_count() or 1
    left = [(j.size, steps_left(j.cfg, j.seed, j.stop_name)) for j in jobs_for(cfg)]
    return [(n, steps, workers) for n, steps in left if steps]


def measure(cfg: Config, label: str = "efficiency", live_dir: Path | None = None) -> list[dict]:
    """Train (or load) and measure every C_mem and C_gen network of cfg (with live_dir, each appends
    its evaluation rows to live_dir/NAME.csv as they come)."""
    jobs = jobs_for(cfg)
    for job in jobs if live_dir else []:
        job.live = str(live_dir / f"{network_name(job)}.csv")
    bar = Bar(f"{label} {cfg.model.arch}: {len(jobs)} circuit networks")
    out = pmap(train_circuit, jobs, protocol_fields(cfg.params, DEFAULTS, "params")["workers"], on_done=bar)
    bar.close()
    return out


def run(cfg: Config, run_dir) -> Verdict:
    crit, p = protocol_fields(cfg.criteria, CRITERIA, "criteria"), protocol_fields(cfg.params, DEFAULTS, "params")
    started = begin(cfg, run_dir)
    results = measure(cfg, live_dir=Path(run_dir) / LIVE)
    status, measured = analyse(results, crit, p["n_boot"], n_inputs(cfg.task))
    measured.pop("estimates", None)
    measured = {"p": cfg.task.p, "arch": cfg.model.arch, "weight_decay": cfg.optim.weight_decay,
                "target_logit": p["target_logit"], **measured}
    verdict = Verdict(NAME, CLAIM, status, measured, crit, seeds=list(cfg.seeds))
    figure(cfg, results, measured, status, run_dir)
    histories = {network_name(r): [{"step": s, "param_norm": n, "train_logit": lg} for s, n, lg in r["curve"]]
                 for r in results}
    return finish(cfg, run_dir, verdict, histories, started, networks(cfg))


def figure(cfg: Config, results: list[dict], m: dict, status: str, run_dir) -> None:
    fig, ax = plots.subplots(1, 2, figsize=(11, 4))
    nd, curves = ax[0, 0], ax[0, 1]
    colour = {"mem": "C0", "gen": "C1"}
    for kind, name in (("mem", "C_mem (random labels)"), ("gen", "C_gen (generalised)")):
        rows = [r for r in results if r["kind"] == kind and r["norm_at_target"] is not None]
        nd.scatter([r["D"] for r in rows], [r["norm_at_target"] for r in rows], color=colour[kind], s=16, label=name)
    nd.set_yscale("log")
    if m.get("mem_exponent") is not None:
        D = np.geomspace(min(r["D"] for r in results), max(r["D"] for r in results), 100)
        nd.plot(D, np.exp(m["mem_log_intercept"] + m["mem_exponent"] * np.log(D)), color="C0", lw=1,
                label=f"C_mem ~ D^{m['mem_exponent']:.2f}")
        nd.axhline(m["gen_mean_norm"], color="C1", lw=1)
        if m.get("D_crit"):
            ci = m["D_crit_ci"]
            nd.axvline(m["D_crit"], color="black", ls="--", lw=0.8,
                       label=f"crossing D={m['D_crit']:.0f}" + (f" [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else ""))
            if ci:
                nd.axvspan(*ci, color="grey", alpha=0.15)
    nd.set(xscale="log", xlabel="D (training pairs)", ylabel=f"parameter norm at logit {m['target_logit']:g}",
           title=f"efficiency: {cfg.model.arch}, p={cfg.task.p}, wd {cfg.optim.weight_decay:g} ({status})")
    nd.legend(fontsize=7)
    sizes = sorted({r["D"] for r in results})
    cmap = plots.plt.get_cmap("viridis")
    for r in results:
        if r["seed"] == results[0]["seed"]:
            _, norms, logits = zip(*r["curve"])
            curves.plot(logits, norms, color=cmap(sizes.index(r["D"]) / max(len(sizes) - 1, 1)), lw=1,
                        ls="-" if r["kind"] == "mem" else "--", label=f"{r['kind']} D={r['D']}")
    curves.axvline(m["target_logit"], color="grey", ls=":", lw=0.8)
    curves.set(xlabel="mean correct-class train logit", ylabel="parameter norm",
               title="along training (solid: C_mem, dashed: C_gen; one seed)")
    curves.legend(fontsize=6, ncol=2)
    plots.save(fig, run_dir, cfg)
