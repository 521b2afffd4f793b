"""Grokking: train accuracy reaches 1 long before test accuracy does.

Per seed: train until test accuracy reaches `criteria.test_acc` (or the budget ends), then read
off t_train (first eval with train accuracy >= criteria.train_acc), t_test (same for test) and
the delay. A seed holds when it groks within budget, the delay is at least
`criteria.min_delay_factor` x t_train, and test accuracy at t_train is at most
`criteria.max_test_acc_at_fit` (the network fit its training set without generalising).

For (x + y) mod p it also tracks the circuits' strengths (circuits/fourier.py): the correct-class
logit of the C_gen part (the logits' component along cos/sin(w (x + y - c))) and of the rest, C_mem,
on train and test, and reports when C_gen overtakes C_mem on the training set, with all frequencies
and with the final network's key frequencies only. These are measured, not judged: the status
logic above does not use them.
"""
from __future__ import annotations

import statistics
from functools import partial

from circuits import fourier, plots
from circuits.config import Config
from circuits.detect import Verdict, combine, grokking_times
from circuits.experiment import begin, finish, train_seed

NAME = "grokking"
CLAIM = "train accuracy reaches 1 long before test accuracy does (a grokking delay)"


def sensitivity(status_at, crit: dict, grid: dict) -> dict:
    """A verdict re-judged with one criterion at a time moved to each of its neighbouring values:
    {key: {value: status_at(criteria with key = value)}} (status_at: criteria -> a status, or a dict of them).
    Shared by the protocols' `measured.sensitivity`."""
    return {k: {str(x): status_at({**crit, k: x}) for x in values} for k, values in grid.items() if k in crit}


def judge(times: dict, status: str, crit: dict) -> str:
    """One seed: holds when it groks within budget with delay >= min_delay_factor x t_train and test
    accuracy at t_train <= max_test_acc_at_fit; fails when it grokked without that; inconclusive when
    train or test never reached its threshold."""
    if status == "diverged":
        return "diverged"
    if times["t_test"] is None or times["t_train"] is None:
        return "inconclusive"
    delayed = times["delay"] >= crit["min_delay_factor"] * max(times["t_train"], 1)
    unfit = times["test_acc_at_fit"] <= crit["max_test_acc_at_fit"]
    return "holds" if delayed and unfit else "fails"


def criteria(cfg: Config) -> dict:
    return {"train_acc": 0.99, "test_acc": 0.99, "min_delay_factor": 2.0, "max_test_acc_at_fit": 0.5, **cfg.criteria}


# neighbouring values of each threshold for measured.sensitivity (test_acc only downwards: a run stops there)
SENSITIVITY = {"min_delay_factor": [1.5, 2.0, 3.0, 5.0], "max_test_acc_at_fit": [0.3, 0.5, 0.7],
               "test_acc": [0.9, 0.95, 0.99]}


def judge_histories(histories: list[list[dict]], run_statuses: list[str], crit: dict) -> str:
    """The verdict from every seed's history: combine(judge(...)) over the seeds (pure)."""
    return combine([judge(grokking_times(h, crit["test_acc"]), s, crit) for h, s in zip(histories, run_statuses)])


def stop_rule(cfg: Config):
    """Training ends once both accuracies pass their thresholds (also used by stacked sweeps)."""
    crit = criteria(cfg)
    return lambda row: row["train_acc"] >= crit["train_acc"] and row.get("test_acc", 0.0) >= crit["test_acc"]


def extra_metrics(cfg: Config) -> tuple:
    """The circuits' Fourier strengths measured at each evaluation ((x + y) mod p only); stacked
    sweeps (circuits/sweep.py prestack) measure the same per member."""
    return (partial(fourier.strength_metrics, per_frequency=True),) if is_addition(cfg) else ()


def run(cfg: Config, run_dir) -> Verdict:
    crit = criteria(cfg)
    started = begin(cfg, run_dir)
    histories, per_seed, statuses = {}, {}, []
    extra = extra_metrics(cfg)
    for seed in cfg.seeds:
        t = train_seed(cfg, seed, run_dir, stop=stop_rule(cfg), extra_metrics=extra)
        h = t.result.history
        times = grokking_times(h, crit["test_acc"])
        status = judge(times, t.result.status, crit)
        statuses.append(status)
        per_seed[seed] = {**times, "status": status, "run_status": t.result.status, "steps": t.result.step,
                          "seconds": round(t.result.seconds, 1),
                          "final_train_acc": h[-1]["train_acc"], "final_test_acc": h[-1].get("test_acc"),
                          "param_norm_at_fit": next((r["param_norm"] for r in h if r["step"] == times["t_train"]), None),
                          "param_norm_final": h[-1]["param_norm"], **strengths(t, times, extra)}
        histories[f"seed{seed}"] = fourier.with_key_logit(h, per_seed[seed].get("key_frequencies"))
    hs, runs = list(histories.values()), [per_seed[s]["run_status"] for s in cfg.seeds]
    measured = {**_medians(per_seed), "per_seed": per_seed,
                "sensitivity": sensitivity(lambda c: judge_histories(hs, runs, c), crit, SENSITIVITY)}
    verdict = Verdict(NAME, CLAIM, combine(statuses), measured, crit, seeds=list(cfg.seeds))
    figure(cfg, list(histories.values()), per_seed, run_dir)
    return finish(cfg, run_dir, verdict, histories, started)


def is_addition(cfg: Config) -> bool:
    """Tasks whose logits split into C_gen and C_mem parts: 2-operand (x + y) mod p, layout xy= or xy."""
    t = cfg.task
    return t.op == "+" and t.k == 2 and t.layout in ("xy=", "xy") and not t.random_labels and t.p % 2 == 1


def strengths(t, times: dict, extra) -> dict:
    """Key frequencies of the final network and the first eval step (at or after train fit) where
    the train C_gen logit exceeds the train C_mem logit: all frequencies, and the key ones only."""
    if not extra:
        return {}
    freqs = fourier.final_key_frequencies(t.model, t.data)
    fit, h = times["t_train"], t.result.history
    return {"key_frequencies": freqs,
            "gen_overtakes_mem_step": None if fit is None else fourier.overtake_step(h, fit),
            "gen_overtakes_mem_step_key_freqs": None if fit is None or not freqs else fourier.overtake_step(h, fit, freqs),
            "final_gen_logit": h[-1].get("train_gen_logit"), "final_train_mem_logit": h[-1].get("train_mem_logit"),
            "final_test_mem_logit": h[-1].get("test_mem_logit")}


def _medians(per_seed: dict) -> dict:
    out = {}
    for key, name in (("t_train", "steps_to_fit"), ("t_test", "steps_to_grok"), ("delay", "delay"),
                      ("delay_factor", "delay_factor"), ("seconds", "seconds_per_seed"),
                      ("gen_overtakes_mem_step", "gen_overtakes_mem_step"),
                      ("gen_overtakes_mem_step_key_freqs", "gen_overtakes_mem_step_key_freqs")):
        vals = [v[key] for v in per_seed.values() if v.get(key) is not None]
        out[f"median_{name}"] = statistics.median(vals) if vals else None
    return out


def figure(cfg: Config, histories: list[list[dict]], per_seed: dict, run_dir) -> None:
    split_c = any("train_gen_logit" in r for h in histories for r in h)
    fig, ax = plots.subplots(3 + split_c, 1, figsize=(6.0, 7.5 + 2.6 * split_c), sharex=True)
    acc, loss, norm = ax[0, 0], ax[1, 0], ax[2, 0]
    panels = list(ax[:, 0])
    for split, color in (("train", "C0"), ("test", "C3")):
        plots.seed_band(acc, histories, f"{split}_acc", split, color)
        plots.seed_band(loss, histories, f"{split}_loss", split, color)
    plots.seed_band(norm, histories, "param_norm", "parameter norm", "C2")
    for s in per_seed.values():
        for key, ls in (("t_train", ":"), ("t_test", "--")):
            if s[key]:
                for a in panels:
                    a.axvline(s[key], color="grey", ls=ls, lw=0.8)
    acc.set_ylabel("accuracy")
    loss.set_ylabel("loss")
    loss.set_yscale("log")
    norm.set_ylabel("parameter norm")
    panels[-1].set_xlabel("step")
    acc.legend(loc="center left")
    if split_c:
        strength_panel(ax[3, 0], histories)
    t, m = cfg.task, cfg.model
    acc.set_title(f"grokking: {m.arch}, (x {t.op} y) mod {t.p}, frac {t.frac}, wd {cfg.optim.weight_decay}, "
                  f"{len(histories)} seed(s)\ndotted: train fit, dashed: test fit", fontsize=9)
    plots.save(fig, run_dir, cfg)


def strength_panel(a, histories: list[list[dict]]) -> None:
    """Correct-class logit of the C_gen part (the same on train and test) and of the C_mem part on
    train and on test; C_gen from the final network's key frequencies only, dash-dotted."""
    plots.seed_band(a, histories, "train_gen_logit", "C_gen (train = test)", "C1")
    n_lines = len(a.get_lines())
    plots.seed_band(a, [h for h in histories if any("gen_key_logit" in r for r in h)], "gen_key_logit",
                    "C_gen, final key freqs only", "C4")
    for line in a.get_lines()[n_lines:]:
        line.set_linestyle("-.")
    plots.seed_band(a, histories, "train_mem_logit", "C_mem, train", "C0")
    plots.seed_band(a, histories, "test_mem_logit", "C_mem, test", "C3")
    a.axhline(0, color="black", lw=0.6)
    a.set_ylabel("correct-class logit\n(minus class mean)")
    a.legend(loc="upper left", fontsize=7)


def budget(cfg: Config) -> list[tuple[int, int, int]]:
    """Each seed to its step cap on the training split (circuits.estimate: the run's time bound)."""
    from circuits.estimate import default_budget
    return default_budget(cfg)
