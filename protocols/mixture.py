"""The mixture experiment (seed report 003, Section 5.1): grokking needs C_gen to be learned more
slowly than C_mem.

Circuits. C_mem and C_gen are two networks of the chosen architecture, trained on the same split
and then frozen (both come from the trained-circuit cache, circuits.cache):
  C_gen  trained as the ungrokking protocol groks its network (weight decay on, stopped once test
         accuracy reaches criteria.gen_test_acc: the quick preset shares that cache entry);
  C_mem  the same network trained with weight decay params.mem_weight_decay (0) and stopped at its
         first evaluation with train accuracy >= criteria.train_acc, on the TRUE labels. There the
         quick MLP (p = 47) has test accuracy 0.0 (it predicts wrong classes on unseen pairs): a clean
         memoriser. The quick transformer learns some general structure along with the fit (test
         accuracy ~0.3 at fit, ~0.45 later, with or without a lower lr): the report's own C_mem has
         "modest validation accuracy", and criteria.mem_test_acc_max bounds it. Trained on without
         weight decay the MLP stays at test accuracy 0 but its logits keep growing (mean
         correct-class train logit 6.4 at fit, 40 after 3,000 steps, against 20 for C_gen): per unit
         of mixture weight it then fits the training set better than C_gen, weight decay keeps it,
         and the mixture never hands over in either setting (measured with gd and adamw). That
         breaks the theory's ingredient 2 (C_gen the more efficient circuit), which Section 5.1
         assumes; the protocol measures it (`efficiency` below) rather than assuming it.

Mixture. C_mix = w_mem * C_mem + w_gen * C_gen with w_mem = w_m1 * w_m2, w_gen = w_g1 * w_g2; only the
four scalars train; w_m1 = w_g1 = 0 at the start, (w_m2, w_g2) per setting. The circuits are frozen,
so their logits on every input are computed once and C_mix's logits are w_mem L_mem + w_gen L_gen:
training is scalar maths on cached logits (float64, full batch on the training split, seconds).
Gradients are written out: dL/dw_mem = <softmax(z) - onehot(y), L_mem> / n_train, and the
sub-weights get dL/dw_m1 = w_m2 dL/dw_mem, dL/dw_m2 = w_m1 dL/dw_mem (tests check them against
autograd). A sub-weight at 0 gets no gradient for its partner, so w_m2, w_g2 stay put until
w_m1, w_g1 move, and early on d w_mem / dt ~ -w_m2^2 dL/dw_mem under gradient descent: w_m2 = 10
makes C_mem learn ~100x faster, less the ratio of the circuits' logit scales (measured:
w_gen_over_w_mem_after_step_1).

Optimiser. Report 003 does not name the optimiser of its Section 5.1. Its Section 2 writes the
objective as L_data + (alpha/2)||theta||^2 and its mechanism is a gradient argument ("the value of
w_m2 influences the gradient of w_m1"); the paper's own toy model of the same two circuits (THEORY.md,
protocols/simulation.py) runs plain gradient descent on the four sub-weights. So the default is
plain gradient descent on L_train + (weight_decay/2) * sum of squared sub-weights
(params.optimizer: gd, torch SGD without momentum); params.optimizer: adamw runs AdamW (the
optimiser of the report's other experiments; decoupled weight decay), reported as a variant.

Settings and readings. `slow_gen` (w_m2, w_g2) = (10, 1) is expected to grok, `equal_speed` (1, 1)
not to. Each is read twice:
  accuracy: circuits.detect.grokking_times and the grokking protocol's criteria: grokking when test
            accuracy is at most criteria.max_test_acc_at_fit at train fit and test fit comes at
            least criteria.min_delay_factor x t_train later; `no_delay` when test accuracy at train
            fit is above that bound, or test fit comes sooner; `inconclusive` when test fit never
            comes. Fit: accuracy >= criteria.test_acc_of_gen x C_gen's own test accuracy, the
            mixture's ceiling (C_gen is stopped at its first test accuracy >= 0.99, so an absolute
            0.99 would time the last traces of C_mem leaving, not generalisation). Any w_mem > 0
            gives C_mem's train predictions, so train fit comes at the first step.
  loss:     t_train_fit = first step with train loss <= criteria.train_loss_fit, rise = the highest
            test loss over steps 1..t_train_fit over the initial ln(d_vocab). `rose` (the report's
            "validation loss increasing while the training loss decreases, then decreasing after
            the training loss gets close to zero"): rise >= criteria.min_test_loss_rise and test loss
            first <= criteria.test_loss_fit at least criteria.min_loss_delay_factor x t_train_fit
            (`inconclusive` when it never gets there); `together` ("train and validation loss go
            down together"): rise <= criteria.max_test_loss_rise; otherwise `neither`.
`slow_gen` holds when both readings say grokking (accuracy `grokking`, loss `rose`); `equal_speed`
holds when neither does (accuracy `no_delay`, loss `together`); a reading still `inconclusive`
makes the setting inconclusive, anything else fails. Premise (before either): C_mem's train
accuracy >= criteria.train_acc and test accuracy <= criteria.mem_test_acc_max, C_gen's test
accuracy >= criteria.gen_test_acc; otherwise the run is inconclusive. Measured, not judged:
`efficiency`, the mixture weight each circuit needs alone to bring train loss to
criteria.train_loss_fit (C_gen needing less is the theory's ingredient 2). Statuses combine with
circuits.detect.combine (per seed of the circuits, then over the two settings).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from circuits import plots
from circuits.cache import trained
from circuits.config import Config, protocol_fields
from circuits.detect import Verdict, claims_from, combine, first_step, grokking_times
from circuits.errors import CircuitsError
from circuits.experiment import LIVE, begin, finish
from circuits.metrics import all_logits
from protocols.grokking import sensitivity
from protocols.simulation import log_steps
from protocols.ungrokking import grokked_rule

NAME = "mixture"
CLAIM = ("a mixture w_mem C_mem + w_gen C_gen of frozen circuits groks when C_gen is learned more slowly "
         "(w_m2 = 10, w_g2 = 1) and does not when both learn equally fast (w_m2 = w_g2 = 1)")
DEFAULTS = {"slow_gen": [10.0, 1.0], "equal_speed": [1.0, 1.0], "optimizer": "gd", "lr": 1e-3,
            "weight_decay": 0.5, "steps": 12000, "points_per_decade": 40, "mem_weight_decay": 0.0}
PARAMS_DOC = {
    "slow_gen": "(w_m2, w_g2) of the setting expected to grok: C_gen's sub-weight starts small",
    "equal_speed": "(w_m2, w_g2) of the setting expected not to grok",
    "optimizer": "gd (plain gradient descent, the default) | adamw",
    "lr": "learning rate of the mixture's four sub-weights",
    "weight_decay": "weight decay on the sub-weights",
    "steps": "mixture training steps",
    "points_per_decade": "evaluations per decade of steps (log-spaced)",
    "mem_weight_decay": "weight decay C_mem is trained with (0: a clean memoriser)",
}
CRITERIA = {"train_acc": 0.99, "test_acc_of_gen": 0.99, "min_delay_factor": 2.0, "max_test_acc_at_fit": 0.5,
            "gen_test_acc": 0.99, "mem_test_acc_max": 0.5, "train_loss_fit": 0.1, "test_loss_fit": 1.0,
            "min_test_loss_rise": 1.1, "max_test_loss_rise": 1.0, "min_loss_delay_factor": 10.0}
SETTINGS = {"slow_gen": True, "equal_speed": False}       # setting -> grokking expected
CLAIMS = {"slow_gen": "C_gen learned more slowly (w_m2 = 10, w_g2 = 1): the mixture groks",
          "equal_speed": "equal learning speeds (w_m2 = w_g2 = 1): train and test loss fall together, no grokking"}
# neighbouring values of the readings' thresholds for measured.sensitivity (the premise's thresholds are
# the circuits' stop rules: changing them retrains the circuits, so they are not re-judged here).
# max_test_loss_rise stays >= 1: the rise includes step 1, where the test loss is still its initial value
SENSITIVITY = {"test_acc_of_gen": [0.95, 0.99], "min_delay_factor": [1.5, 2.0, 3.0],
               "max_test_acc_at_fit": [0.3, 0.5, 0.7], "train_loss_fit": [0.05, 0.1, 0.2],
               "test_loss_fit": [0.5, 1.0, 1.5], "min_test_loss_rise": [1.05, 1.1, 1.5],
               "max_test_loss_rise": [1.0, 1.05, 1.1], "min_loss_delay_factor": [5.0, 10.0, 20.0]}
OPTIMIZERS = ("gd", "adamw")
f64 = torch.float64


def params(cfg: Config) -> dict:
    p = protocol_fields(cfg.params, DEFAULTS, "params")
    for name in SETTINGS:
        w2 = p[name]
        if not (isinstance(w2, (list, tuple)) and len(w2) == 2 and all(isinstance(v, (int, float)) for v in w2)):
            raise CircuitsError(f"params.{name} must be [w_m2, w_g2], two numbers, got {w2!r}")
        p[name] = [float(v) for v in w2]
    if p["optimizer"] not in OPTIMIZERS:
        raise CircuitsError(f"params.optimizer must be one of {', '.join(OPTIMIZERS)}, got {p['optimizer']!r}")
    if not (p["lr"] > 0 and p["weight_decay"] >= 0 and p["steps"] >= 10 and p["points_per_decade"] >= 1
            and p["mem_weight_decay"] >= 0):
        raise CircuitsError("mixture needs params.lr > 0, weight_decay >= 0, steps >= 10, points_per_decade >= 1 "
                            "and mem_weight_decay >= 0")
    return p


def criteria(cfg: Config) -> dict:
    return protocol_fields(cfg.criteria, CRITERIA, "criteria")


# ---------------------------------------------------------------- the two frozen circuits

def mem_config(cfg: Config, p: dict) -> Config:
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, weight_decay=p["mem_weight_decay"]))


def circuits(cfg: Config, seed: int, p: dict, crit: dict, live_dir: Path | None = None):
    """(C_mem, C_gen, their cache files by name) for one seed, from the cache (trained there if absent;
    with live_dir, their evaluation rows go to live_dir/NAME.csv as they come)."""
    stop, name = grokked_rule(crit["gen_test_acc"])        # the ungrokking protocol's: a shared cache entry
    live = (lambda n: live_dir / f"seed{seed}-{n}.csv") if live_dir else (lambda n: None)      # noqa: E731
    gen, gen_path = trained(cfg, seed, stop=stop, stop_name=name, label=f"C_gen {cfg.model.arch} seed {seed} (cached)",
                            live=live("C_gen"))
    mem, mem_path = trained(mem_config(cfg, p), seed, stop=lambda row: row["train_acc"] >= crit["train_acc"],
                            stop_name=f"train-fit-{crit['train_acc']}",
                            label=f"C_mem {cfg.model.arch} seed {seed} (cached)", live=live("C_mem"))
    return mem, gen, {f"seed{seed}-C_mem": mem_path, f"seed{seed}-C_gen": gen_path}


# ---------------------------------------------------------------- the mixture (tensors: float64)

def mix_logits(sub, L_mem, L_gen):
    """sub: [4] = (w_m1, w_m2, w_g1, w_g2); L_*: [n, d_vocab] -> C_mix logits [n, d_vocab]."""
    return sub[0] * sub[1] * L_mem + sub[2] * sub[3] * L_gen


def data_grad(sub, L_mem, L_gen, labels):
    """Gradient of the mean cross-entropy of C_mix on (L_*, labels) w.r.t. the sub-weights, [4]."""
    z = mix_logits(sub, L_mem, L_gen)                                    # [n, d_vocab]
    delta = torch.softmax(z, -1)
    delta[torch.arange(len(labels)), labels] -= 1.0                      # dL/dz * n
    g_mem = (delta * L_mem).sum() / len(labels)                         # dL/dw_mem
    g_gen = (delta * L_gen).sum() / len(labels)
    return torch.stack([g_mem * sub[1], g_mem * sub[0], g_gen * sub[3], g_gen * sub[2]])


def make_optimizer(sub, p: dict) -> torch.optim.Optimizer:
    if p["optimizer"] == "gd":      # plain gradient descent on L + (wd / 2) * |sub|^2
        return torch.optim.SGD([sub], lr=p["lr"], weight_decay=p["weight_decay"])
    return torch.optim.AdamW([sub], lr=p["lr"], betas=(0.9, 0.98), weight_decay=p["weight_decay"])


def measure(sub, L_mem, L_gen, labels, train_idx, test_idx) -> dict:
    z = mix_logits(sub, L_mem, L_gen)
    row = {}
    for split, idx in (("train", train_idx), ("test", test_idx)):
        row[f"{split}_loss"] = F.cross_entropy(z[idx], labels[idx]).item()
        row[f"{split}_acc"] = (z[idx].argmax(-1) == labels[idx]).double().mean().item()
    return {**row, "w_mem": float(sub[0] * sub[1]), "w_gen": float(sub[2] * sub[3])}


def train_mixture(w2: list[float], L_mem, L_gen, labels, train_idx, test_idx, p: dict) -> list[dict]:
    """Train the four sub-weights from (0, w_m2, 0, w_g2); the history on the log grid of steps."""
    sub = torch.tensor([0.0, w2[0], 0.0, w2[1]], dtype=f64)
    opt = make_optimizer(sub, p)
    Lm_tr, Lg_tr, y_tr = L_mem[train_idx], L_gen[train_idx], labels[train_idx]
    grid, history = set(log_steps(p["steps"], p["points_per_decade"])), []
    for step in range(p["steps"] + 1):
        if step in grid:
            history.append({"step": step, **measure(sub, L_mem, L_gen, labels, train_idx, test_idx)})
            if not all(math.isfinite(v) for v in history[-1].values()):
                break
        if step < p["steps"]:
            sub.grad = data_grad(sub, Lm_tr, Lg_tr, y_tr)
            opt.step()
    return history


def weight_needed(L, labels, target: float, w_max: float = 1e3, points: int = 600) -> float | None:
    """The smallest w on a log grid in [1e-3, w_max] with cross-entropy(w L, labels) <= target
    (one circuit alone in the mixture), else None: its mixture-weight cost of fitting the set."""
    for w in torch.logspace(-3, math.log10(w_max), points, dtype=f64).tolist():
        if F.cross_entropy(w * L, labels).item() <= target:
            return w
    return None


# ---------------------------------------------------------------- readings and judging

def acc_reading(history: list[dict], crit: dict, gen_test_acc: float) -> dict:
    """The grokking protocol's delay detector on the accuracies: grokking | no_delay | inconclusive.
    Fit means accuracy >= criteria.test_acc_of_gen x C_gen's own test accuracy (the mixture's ceiling)."""
    times = grokking_times(history, crit["test_acc_of_gen"] * min(gen_test_acc, 1.0))
    if times["t_train"] is None:
        return {**times, "reading": "inconclusive"}
    if times["test_acc_at_fit"] > crit["max_test_acc_at_fit"]:
        return {**times, "reading": "no_delay"}          # generalised together with the fit
    if times["t_test"] is None:
        return {**times, "reading": "inconclusive"}      # test never fit within params.steps
    delayed = times["delay"] >= crit["min_delay_factor"] * max(times["t_train"], 1)
    return {**times, "reading": "grokking" if delayed else "no_delay"}


def loss_reading(history: list[dict], crit: dict) -> dict:
    """Did test loss rise while train loss fell, and fall only long after (rose), or fall with it (together)?"""
    t_fit = first_step(history, "train_loss", crit["train_loss_fit"], below=True)
    init = history[0]["test_loss"]
    out = {"t_train_loss_fit": t_fit, "t_test_loss_fit": None, "test_loss_init": init, "test_loss_rise": None,
           "test_loss_at_fit": None, "loss_delay_factor": None, "test_loss_max": max(r["test_loss"] for r in history),
           "final_train_loss": history[-1]["train_loss"], "final_test_loss": history[-1]["test_loss"]}
    if t_fit is None:
        return {**out, "reading": "inconclusive"}
    out["test_loss_rise"] = max(r["test_loss"] for r in history if 0 < r["step"] <= t_fit) / init
    out["test_loss_at_fit"] = next(r["test_loss"] for r in history if r["step"] == t_fit)
    out["t_test_loss_fit"] = t_test = first_step(history, "test_loss", crit["test_loss_fit"], below=True)
    if t_test is not None:
        out["loss_delay_factor"] = t_test / max(t_fit, 1)
    if out["test_loss_rise"] <= crit["max_test_loss_rise"]:
        return {**out, "reading": "together"}
    if out["test_loss_rise"] < crit["min_test_loss_rise"]:
        return {**out, "reading": "neither"}             # rose a little: not the report's picture either way
    if t_test is None:
        return {**out, "reading": "inconclusive"}
    return {**out, "reading": "rose" if out["loss_delay_factor"] >= crit["min_loss_delay_factor"] else "neither"}


def judge(expect_grokking: bool, acc: str, loss: str) -> str:
    """A setting's status from its two readings (see the module docstring)."""
    want = ("grokking", "rose") if expect_grokking else ("no_delay", "together")
    if (acc, loss) == want:
        return "holds"
    if "inconclusive" in (acc, loss) and acc in (want[0], "inconclusive") and loss in (want[1], "inconclusive"):
        return "inconclusive"
    return "fails"


def setting_status(expect_grokking: bool, history: list[dict], crit: dict, gen_test_acc: float) -> str:
    """One setting of one seed from its mixture history: both readings, then judge (pure)."""
    if not all(math.isfinite(v) for r in history for v in r.values()):
        return "diverged"
    acc, loss = acc_reading(history, crit, gen_test_acc)["reading"], loss_reading(history, crit)["reading"]
    return judge(expect_grokking, acc, loss)


def statuses_at(per_seed: dict, histories: dict, crit: dict) -> dict:
    """Each setting's status over the seeds under criteria `crit` (premise as measured)."""
    return {name: combine([setting_status(expect, histories[f"{name}-seed{s}"], crit, m["premise"]["gen_test_acc"])
                           if name in m else "inconclusive" for s, m in per_seed.items()])
            for name, expect in SETTINGS.items()}


def premise(mem_hist: list[dict], gen_hist: list[dict], crit: dict) -> dict:
    m, g = mem_hist[-1], gen_hist[-1]
    ok = (m["train_acc"] >= crit["train_acc"] and m.get("test_acc", 1.0) <= crit["mem_test_acc_max"]
          and g.get("test_acc", 0.0) >= crit["gen_test_acc"])
    return {"mem_train_acc": m["train_acc"], "mem_test_acc": m.get("test_acc"), "mem_steps": m["step"],
            "mem_train_logit": m["train_logit"], "gen_train_acc": g["train_acc"], "gen_test_acc": g.get("test_acc"),
            "gen_steps": g["step"], "gen_train_logit": g["train_logit"], "ok": ok}


# ---------------------------------------------------------------- the protocol

def run_seed(cfg: Config, seed: int, p: dict, crit: dict, live_dir: Path | None = None) -> tuple[dict, dict, dict]:
    """One pair of circuits: its premise, efficiency and the mixture per setting; (measured, histories,
    the two networks' cache files)."""
    mem, gen, networks = circuits(cfg, seed, p, crit, live_dir)
    data = gen.data
    histories = {f"seed{seed}-C_mem": mem.result.history, f"seed{seed}-C_gen": gen.result.history}
    out = {"premise": premise(mem.result.history, gen.result.history, crit)}
    if not out["premise"]["ok"] or "diverged" in (mem.result.status, gen.result.status):
        return out, histories, networks
    L_mem, L_gen = all_logits(mem.model, data).double().cpu(), all_logits(gen.model, data).double().cpu()
    labels, tr, te = data.labels.cpu(), data.train_idx.cpu(), data.test_idx.cpu()
    out["efficiency"] = {f"w_{c}_needed": weight_needed(L[tr], labels[tr], crit["train_loss_fit"])
                         for c, L in (("mem", L_mem), ("gen", L_gen))}
    for name, expect in SETTINGS.items():
        h = train_mixture(p[name], L_mem, L_gen, labels, tr, te, p)
        histories[f"{name}-seed{seed}"] = h
        acc, loss = acc_reading(h, crit, out["premise"]["gen_test_acc"]), loss_reading(h, crit)
        status = setting_status(expect, h, crit, out["premise"]["gen_test_acc"])
        first = h[1] if len(h) > 1 else h[0]
        out[name] = {"w_m2": p[name][0], "w_g2": p[name][1], "status": status, "accuracy": acc, "loss": loss,
                     "w_gen_over_w_mem_after_step_1": first["w_gen"] / first["w_mem"] if first["w_mem"] else None,
                     "final_test_acc": h[-1]["test_acc"], "final_w_mem": h[-1]["w_mem"], "final_w_gen": h[-1]["w_gen"]}
    return out, histories, networks


def seed_status(m: dict, name: str) -> str:
    return m[name]["status"] if name in m else "inconclusive"   # premise not met: nothing to judge


def run(cfg: Config, run_dir) -> Verdict:
    p, crit = params(cfg), criteria(cfg)
    if cfg.task.frac >= 1.0:
        raise CircuitsError(f"mixture needs a test split: task.frac must be < 1, got {cfg.task.frac}")
    started = begin(cfg, run_dir)
    per_seed, histories, networks = {}, {}, {}
    for seed in cfg.seeds:
        per_seed[seed], h, nets = run_seed(cfg, seed, p, crit, Path(run_dir) / LIVE)
        histories.update(h)
        networks.update(nets)
    statuses = {name: combine([seed_status(m, name) for m in per_seed.values()]) for name in SETTINGS}
    measured = {"statuses": statuses, "claims": claims_from({CLAIMS[k]: s for k, s in statuses.items()}),
                "optimizer": p["optimizer"], "arch": cfg.model.arch, **headline(per_seed), "per_seed": per_seed,
                "sensitivity": sensitivity(lambda c: statuses_at(per_seed, histories, c), crit, SENSITIVITY)}
    verdict = Verdict(NAME, CLAIM, combine(list(statuses.values())), measured, crit, seeds=list(cfg.seeds))
    figure(cfg, p, histories, per_seed, statuses, run_dir)
    return finish(cfg, run_dir, verdict, histories, started, networks)


def headline(per_seed: dict) -> dict:
    """The first seed's key numbers, flat (what `circuits run` prints)."""
    m = next(iter(per_seed.values()))
    out = {"mem_test_acc": m["premise"]["mem_test_acc"], "gen_test_acc": m["premise"]["gen_test_acc"]}
    for name in SETTINGS:
        if name in m:
            a, l = m[name]["accuracy"], m[name]["loss"]
            out.update({f"{name}_t_test": a["t_test"], f"{name}_test_acc_at_fit": a["test_acc_at_fit"],
                        f"{name}_test_loss_rise": l["test_loss_rise"], f"{name}_t_test_loss_fit": l["t_test_loss_fit"]})
    return out


TITLES = {"slow_gen": "C_gen learned slowly", "equal_speed": "equal learning speed"}


def figure(cfg: Config, p: dict, histories: dict, per_seed: dict, statuses: dict, run_dir) -> None:
    """Report 003, Fig. 5: rows the two settings, columns accuracy and loss, train and test."""
    fig, ax = plots.subplots(2, 2, figsize=(10.0, 6.0))
    for row, name in enumerate(SETTINGS):
        hs = [[{**r, "step": r["step"] + 1} for r in histories[f"{name}-seed{s}"]]      # log axis: step + 1
              for s in per_seed if f"{name}-seed{s}" in histories]
        acc, loss = ax[row, 0], ax[row, 1]
        for split, color in (("train", "C0"), ("test", "C3")):
            plots.seed_band(acc, hs, f"{split}_acc", split, color)
            plots.seed_band(loss, hs, f"{split}_loss", split, color)
        for m in per_seed.values():
            if name in m:
                for t, ls in ((m[name]["loss"]["t_train_loss_fit"], ":"), (m[name]["accuracy"]["t_test"], "--")):
                    if t is not None:
                        for a in (acc, loss):
                            a.axvline(t + 1, color="grey", ls=ls, lw=0.8)
        w_m2, w_g2 = p[name]
        acc.set_title(f"{TITLES[name]}: w_m2 = {w_m2:g}, w_g2 = {w_g2:g} ({statuses[name]})", fontsize=9)
        acc.set_ylabel("accuracy")
        loss.set_ylabel("loss")
        loss.set_yscale("log")
        acc.legend(loc="center left", fontsize=8)
    for a in ax[1]:
        a.set_xlabel("step + 1")
    t = cfg.task
    fig.suptitle(f"mixture w_mem C_mem + w_gen C_gen of frozen {cfg.model.arch}s, (x {t.op} y) mod {t.p}, "
                 f"{p['optimizer']} lr {p['lr']:g} wd {p['weight_decay']:g}; dotted: train loss <= "
                 f"fit, dashed: test accuracy fit", fontsize=9)
    plots.save(fig, run_dir, cfg)
