"""Grokking: train accuracy reaches 1 long before test accuracy does.

Per seed: train until test accuracy reaches `criteria.test_acc` (or the budget ends), then read
off t_train (first eval with train accuracy >= criteria.train_acc), t_test (same for test) and
the delay. A seed holds when it groks within budget, the delay is at least
`criteria.min_delay_factor` x t_train, and test accuracy at t_train is at most
`criteria.max_test_acc_at_fit` (the network fit its training set without generalising).
"""
from __future__ import annotations

import statistics

from circuits import plots
from circuits.config import Config
from circuits.detect import Verdict, combine, grokking_times
from circuits.experiment import begin, finish, train_seed

NAME = "grokking"
CLAIM = "train accuracy reaches 1 long before test accuracy does (a grokking delay)"


def judge(times: dict, status: str, crit: dict) -> str:
    if status == "diverged":
        return "diverged"
    if times["t_test"] is None or times["t_train"] is None:
        return "inconclusive"
    delayed = times["delay"] >= crit["min_delay_factor"] * max(times["t_train"], 1)
    unfit = times["test_acc_at_fit"] <= crit["max_test_acc_at_fit"]
    return "holds" if delayed and unfit else "fails"


def criteria(cfg: Config) -> dict:
    return {"train_acc": 0.99, "test_acc": 0.99, "min_delay_factor": 2.0, "max_test_acc_at_fit": 0.5, **cfg.criteria}


def stop_rule(cfg: Config):
    """Training ends once both accuracies pass their thresholds (also used by stacked sweeps)."""
    crit = criteria(cfg)
    return lambda row: row["train_acc"] >= crit["train_acc"] and row.get("test_acc", 0.0) >= crit["test_acc"]


def run(cfg: Config, run_dir) -> Verdict:
    crit = criteria(cfg)
    started = begin(cfg, run_dir)
    histories, per_seed, statuses = {}, {}, []
    for seed in cfg.seeds:
        t = train_seed(cfg, seed, run_dir, stop=stop_rule(cfg))
        h = t.result.history
        times = grokking_times(h, crit["test_acc"])
        status = judge(times, t.result.status, crit)
        statuses.append(status)
        histories[f"seed{seed}"] = h
        per_seed[seed] = {**times, "status": status, "steps": t.result.step, "seconds": round(t.result.seconds, 1),
                          "final_train_acc": h[-1]["train_acc"], "final_test_acc": h[-1].get("test_acc"),
                          "param_norm_at_fit": next((r["param_norm"] for r in h if r["step"] == times["t_train"]), None),
                          "param_norm_final": h[-1]["param_norm"]}
    measured = {"per_seed": per_seed, **_medians(per_seed)}
    verdict = Verdict(NAME, CLAIM, combine(statuses), measured, crit, seeds=list(cfg.seeds))
    figure(cfg, list(histories.values()), per_seed, run_dir)
    return finish(cfg, run_dir, verdict, histories, started)


def _medians(per_seed: dict) -> dict:
    out = {}
    for key, name in (("t_train", "steps_to_fit"), ("t_test", "steps_to_grok"), ("delay", "delay"),
                      ("delay_factor", "delay_factor"), ("seconds", "seconds_per_seed")):
        vals = [v[key] for v in per_seed.values() if v[key] is not None]
        out[f"median_{name}"] = statistics.median(vals) if vals else None
    return out


def figure(cfg: Config, histories: list[list[dict]], per_seed: dict, run_dir) -> None:
    fig, ax = plots.subplots(3, 1, figsize=(6.0, 7.5), sharex=True)
    acc, loss, norm = ax[0, 0], ax[1, 0], ax[2, 0]
    for split, color in (("train", "C0"), ("test", "C3")):
        plots.seed_band(acc, histories, f"{split}_acc", split, color)
        plots.seed_band(loss, histories, f"{split}_loss", split, color)
    plots.seed_band(norm, histories, "param_norm", "parameter norm", "C2")
    for s in per_seed.values():
        for key, ls in (("t_train", ":"), ("t_test", "--")):
            if s[key]:
                for a in (acc, loss, norm):
                    a.axvline(s[key], color="grey", ls=ls, lw=0.8)
    acc.set_ylabel("accuracy")
    loss.set_ylabel("loss")
    loss.set_yscale("log")
    norm.set_ylabel("parameter norm")
    norm.set_xlabel("step")
    acc.legend(loc="center left")
    t, m = cfg.task, cfg.model
    acc.set_title(f"grokking: {m.arch}, (x {t.op} y) mod {t.p}, frac {t.frac}, wd {cfg.optim.weight_decay}, "
                  f"{len(histories)} seed(s)\ndotted: train fit, dashed: test fit", fontsize=9)
    plots.save(fig, run_dir)
