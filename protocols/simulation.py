"""The toy simulation of the circuit-efficiency theory (Varma et al. 2023, Section 3 and Appendix C).

Model. Two circuits, C_gen and C_mem, are fixed look-up tables whose logits are scaled by learned
scalars, each a product of two sub-weights: w_G = w_G1 * w_G2, w_M = w_M1 * w_M2; q classes. Every
example sees the same logits, so the losses are closed-form functions of the two scalars:
  train: the correct class gets w_G + w_M, the other q - 1 get 0
         L_train = log(1 + (q - 1) e^-(w_G + w_M))
  test:  the correct class gets w_G, one fixed wrong class w_M, the other q - 2 get 0
         L_test = log(e^w_G + e^w_M + q - 2) - w_G
  objective: L_train + (alpha/2) sum_i (P_i |w_i|^(1/kappa))^2    (P_i w^(1/kappa): circuit i's norm)
Plain gradient descent on the four sub-weights, float64. With g_i = d objective / d w_i, the
sub-weight gradients are g_i * w_i2 and g_i * w_i1 (written out below for speed; the tests check
them against autograd). A circuit whose sub-weight starts at 0 learns slowly: d w_i/dt = -g_i
(w_i1^2 + w_i2^2), which is 0.005^2 for C_gen at init against 1 for C_mem.

Closed-form optimum. L_train depends on s = w_G + w_M only, so at the optimum s is split to
minimise the penalty: (alpha/kappa) P_i^2 w_i^((2 - kappa)/kappa) = lambda for both circuits, i.e.
w_i proportional to P_i^(-2 kappa/(2 - kappa)). For kappa < 2 the penalty is strictly convex in w,
so this is the unique optimum: the circuits share the logit. The product parameterisation has the
same stationary points where w_i != 0.

Checks (criteria in simulation.yaml): (a) grokking: all three ingredients, test loss falls only
long after train loss; (b) inefficient_gen: P_G > P_M, test loss never falls; (c) equal_speed:
w_G2 = w_M2, no delay; ungrokking: after (a), P_M lowered below P_G, the weight moves back to C_mem
and test loss rises; optimum: w_G/w_M at the end of (a) against the closed form. Deterministic:
no seeds.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from circuits import plots
from circuits.config import Config, protocol_fields
from circuits.detect import Verdict, combine
from circuits.errors import CircuitsError
from circuits.experiment import begin, finish

NAME = "simulation"
CLAIM = ("toy model: an efficient, slowly learned C_gen groks; an inefficient one never generalises; "
         "equal speeds give no delay; lowering P_M ungroks")

DEFAULTS = {"q": 113, "P_G": 1.0, "P_M": 2.0, "kappa": 1.2, "alpha": 0.005, "lr": 0.01,
            "w_G1": 0.0, "w_G2": 0.005, "w_M1": 0.0, "w_M2": 1.0, "steps": 100_000,
            "inefficient_P_G": 2.0, "inefficient_P_M": 1.0, "equal_w_G2": 1.0,
            "ungrok_P_M": 0.5, "ungrok_steps": 20_000, "points_per_decade": 50}
CRITERIA = {"train_loss_fit": 0.1, "test_loss_fit": 1.0, "min_delay_factor": 10.0,
            "min_test_loss_ratio_at_fit": 0.9, "max_delay_factor": 3.0, "ungrok_min_test_loss": 1.0,
            "optimum_rtol": 0.05, "converged_rtol": 1e-3}
REGIMES = ("grokking", "inefficient_gen", "equal_speed")
EPS = 1e-12          # |w| is clamped here before the fractional power (kappa > 2 has an infinite slope at 0)
f64 = torch.float64


def params(cfg: Config) -> dict:
    p = protocol_fields(cfg.params, DEFAULTS, "params")
    if not (p["q"] >= 3 and p["kappa"] > 0 and p["alpha"] >= 0 and p["lr"] > 0 and p["steps"] >= 10):
        raise CircuitsError("simulation needs params.q >= 3, kappa > 0, alpha >= 0, lr > 0 and steps >= 10")
    return p


def criteria(cfg: Config) -> dict:
    return protocol_fields(cfg.criteria, CRITERIA, "criteria")


# ---------------------------------------------------------------- the model (tensors: [..., runs])

def train_loss(w_G, w_M, q: int):
    return F.softplus(math.log(q - 1) - (w_G + w_M))


def test_loss(w_G, w_M, q: int):
    return torch.logsumexp(torch.stack([w_G, w_M, torch.full_like(w_G, math.log(q - 2))]), 0) - w_G


def penalty(w, P, kappa: float, alpha: float):
    """w, P: [2 (G, M), runs] -> [runs]."""
    return 0.5 * alpha * (P**2 * w.abs().clamp_min(EPS).pow(2 / kappa)).sum(0)


def objective(sub, P, kappa: float, alpha: float, q: int):
    """sub: [2 circuits (G, M), 2 sub-weights, runs] -> [runs]; what gradient descent minimises."""
    w = sub[:, 0] * sub[:, 1]
    return train_loss(w[0], w[1], q) + penalty(w, P, kappa, alpha)


def grad(sub, P, kappa: float, alpha: float, q: int):
    """d objective / d sub, written out: g_i * (w_i2, w_i1)."""
    w = sub[:, 0] * sub[:, 1]                                            # [2, runs]
    g = -torch.sigmoid(math.log(q - 1) - w.sum(0))                      # d L_train / d w_i
    g = g + (alpha / kappa) * P**2 * w.abs().clamp_min(EPS).pow(2 / kappa - 1) * w.sign()
    return g.unsqueeze(1) * sub.flip(1)


def simulate(sub, P, steps: int, kappa: float, alpha: float, lr: float, q: int):
    """`steps` of gradient descent on sub (in place); returns w_G, w_M at every step [steps + 1, 2, runs]."""
    trace = torch.empty(steps + 1, *P.shape, dtype=f64)
    for t in range(steps + 1):
        trace[t] = sub[:, 0] * sub[:, 1]
        if t < steps:
            sub -= lr * grad(sub, P, kappa, alpha, q)
    return trace


def optimum_ratio(P_G: float, P_M: float, kappa: float) -> float:
    """w_G / w_M at the optimum (kappa < 2): (P_G / P_M)^(-2 kappa / (2 - kappa))."""
    return (P_G / P_M) ** (-2 * kappa / (2 - kappa))


# ---------------------------------------------------------------- reading the traces

def first_below(x, threshold: float) -> int | None:
    hit = (x < threshold).nonzero()
    return int(hit[0]) if len(hit) else None


def log_steps(n: int, per_decade: int) -> list[int]:
    grid = torch.logspace(0, math.log10(n), max(2, int(per_decade * math.log10(n))), dtype=f64)
    return sorted({0, n, *grid.round().long().tolist()})


def history(trace, losses, run: int, steps: list[int], offset: int = 0) -> list[dict]:
    train, test = losses
    return [{"step": s + offset, "train_loss": float(train[s, run]), "test_loss": float(test[s, run]),
             "w_G": float(trace[s, 0, run]), "w_M": float(trace[s, 1, run])} for s in steps]


def regime_numbers(trace, losses, run: int, crit: dict) -> dict:
    train, test = losses[0][:, run], losses[1][:, run]
    t_train, t_test = first_below(train, crit["train_loss_fit"]), first_below(test, crit["test_loss_fit"])
    return {"t_train_fit": t_train, "t_test_fit": t_test,
            "delay_factor": t_test / max(t_train, 1) if t_train is not None and t_test is not None else None,
            "test_loss_init": float(test[0]), "test_loss_at_fit": float(test[t_train]) if t_train is not None else None,
            "test_loss_max": float(test.max()), "final_w_G": float(trace[-1, 0, run]),
            "final_w_M": float(trace[-1, 1, run]), "final_train_loss": float(train[-1]), "final_test_loss": float(test[-1])}


def judge(regime: str, m: dict, crit: dict) -> str:
    if m["t_train_fit"] is None:
        return "inconclusive"                      # never fit the training set: nothing to judge
    if regime == "inefficient_gen":
        return "holds" if m["t_test_fit"] is None else "fails"
    if m["t_test_fit"] is None:
        return "inconclusive"
    if regime == "grokking":
        stayed_high = m["test_loss_at_fit"] >= crit["min_test_loss_ratio_at_fit"] * m["test_loss_init"]
        return "holds" if m["delay_factor"] >= crit["min_delay_factor"] and stayed_high else "fails"
    return "holds" if m["delay_factor"] <= crit["max_delay_factor"] else "fails"


def optimum_check(trace, p: dict, crit: dict) -> dict:
    """w_G/w_M at the end of regime (a) against the closed form; judged only once it has stopped moving."""
    ratio = lambda t: float(trace[t, 0, 0] / trace[t, 1, 0])  # noqa: E731
    measured, earlier = ratio(-1), ratio(int(0.9 * (len(trace) - 1)))
    out = {"ratio_measured": measured, "ratio_predicted": None, "rel_err": None,
           "ratio_change_last_10pct": abs(measured / earlier - 1)}
    if p["kappa"] >= 2:
        return {**out, "status": "inconclusive", "note": "the closed form needs kappa < 2"}
    out["ratio_predicted"] = optimum_ratio(p["P_G"], p["P_M"], p["kappa"])
    out["rel_err"] = abs(measured / out["ratio_predicted"] - 1)
    if out["ratio_change_last_10pct"] > crit["converged_rtol"]:
        return {**out, "status": "inconclusive", "note": "not converged within params.steps"}
    return {**out, "status": "holds" if out["rel_err"] <= crit["optimum_rtol"] else "fails"}


def ungrok_numbers(before, trace_u, losses_u, p: dict, crit: dict) -> dict:
    test = losses_u[1][:, 0]
    m = {"P_M_after": p["ungrok_P_M"], "steps": p["ungrok_steps"],
         "w_G_before": float(before[0]), "w_M_before": float(before[1]),
         "w_G_after": float(trace_u[-1, 0, 0]), "w_M_after": float(trace_u[-1, 1, 0]),
         "test_loss_before": float(test[0]), "test_loss_after": float(test[-1]),
         "train_loss_after": float(losses_u[0][-1, 0]),
         "t_test_above_fit": next((int(i) for i in (test >= crit["test_loss_fit"]).nonzero()[:1]), None)}
    if p["kappa"] < 2:
        m["ratio_predicted"] = optimum_ratio(p["P_G"], p["ungrok_P_M"], p["kappa"])
    m["ratio_after"] = m["w_G_after"] / m["w_M_after"]
    ok = m["w_M_after"] > m["w_M_before"] and m["w_G_after"] < m["w_G_before"] \
        and m["test_loss_after"] >= crit["ungrok_min_test_loss"]
    return {**m, "status": "holds" if ok else "fails"}


# ---------------------------------------------------------------- the protocol

def run(cfg: Config, run_dir) -> Verdict:
    p, crit = params(cfg), criteria(cfg)
    started, t0 = begin(cfg, run_dir), time.perf_counter()
    q, hyper = int(p["q"]), (p["kappa"], p["alpha"], p["lr"], int(p["q"]))
    steps, u_steps = int(p["steps"]), int(p["ungrok_steps"])
    P = torch.tensor([[p["P_G"], p["inefficient_P_G"], p["P_G"]],
                      [p["P_M"], p["inefficient_P_M"], p["P_M"]]], dtype=f64)    # [2, runs]
    sub = torch.tensor([[[p["w_G1"]] * 3, [p["w_G2"], p["w_G2"], p["equal_w_G2"]]],
                        [[p["w_M1"]] * 3, [p["w_M2"]] * 3]], dtype=f64)           # [2, 2, runs]
    trace = simulate(sub, P, steps, *hyper)
    losses = (train_loss(trace[:, 0], trace[:, 1], q), test_loss(trace[:, 0], trace[:, 1], q))
    sub_u = sub[..., :1].clone()                  # regime (a) after its budget, then P_M lowered
    P_u = torch.tensor([[p["P_G"]], [p["ungrok_P_M"]]], dtype=f64)
    trace_u = simulate(sub_u, P_u, u_steps, *hyper)
    losses_u = (train_loss(trace_u[:, 0], trace_u[:, 1], q), test_loss(trace_u[:, 0], trace_u[:, 1], q))
    seconds = time.perf_counter() - t0

    regimes = {r: regime_numbers(trace, losses, i, crit) for i, r in enumerate(REGIMES)}
    for r, m in regimes.items():
        m["status"] = judge(r, m, crit)
    ungrok = ungrok_numbers(trace[-1, :, 0], trace_u, losses_u, p, crit)
    optimum = optimum_check(trace, p, crit)
    statuses = {**{r: m["status"] for r, m in regimes.items()}, "ungrokking": ungrok["status"],
                "optimum": optimum["status"]}
    finite = all(bool(torch.isfinite(x).all()) for x in (trace, trace_u, *losses, *losses_u))
    status = combine(list(statuses.values())) if finite else "diverged"
    measured = {"delay_factor_grokking": regimes["grokking"]["delay_factor"],
                "delay_factor_equal_speed": regimes["equal_speed"]["delay_factor"],
                "final_test_loss_inefficient_gen": regimes["inefficient_gen"]["final_test_loss"],
                "ungrok_test_loss_after": ungrok["test_loss_after"],
                "optimum_ratio_measured": optimum["ratio_measured"],
                "optimum_ratio_predicted": optimum["ratio_predicted"],
                "statuses": statuses, "regimes": regimes, "ungrokking": ungrok, "optimum": optimum,
                "simulation_seconds": round(seconds, 2)}
    grid, grid_u = log_steps(steps, p["points_per_decade"]), log_steps(u_steps, p["points_per_decade"])
    histories = {r: history(trace, losses, i, grid) for i, r in enumerate(REGIMES)}
    histories["ungrokking"] = history(trace_u, losses_u, 0, grid_u, offset=steps)
    figure(histories, regimes, ungrok, optimum, p, steps, run_dir)
    verdict = Verdict(NAME, CLAIM, status, measured, crit, seeds=[])
    return finish(cfg, run_dir, verdict, histories, started)


TITLES = {"grokking": "(a) all three ingredients: grokking",
          "inefficient_gen": "(b) less efficient C_gen (P_G > P_M): no generalisation",
          "equal_speed": "(c) equal learning speed (w_G2 = w_M2): no delay",
          "ungrokking": "(d) after (a), P_M lowered below P_G: ungrokking"}


def figure(histories: dict, regimes: dict, ungrok: dict, optimum: dict, p: dict, steps: int, run_dir) -> None:
    fig, ax = plots.subplots(4, 2, figsize=(10.0, 11.0))
    for row, (name, h) in enumerate(histories.items()):
        if name == "ungrokking":
            h = [{**r, "step": r["step"] - steps} for r in h]
        loss, w = ax[row, 0], ax[row, 1]
        plots.seed_band(loss, [h], "train_loss", "train loss", "C0")
        plots.seed_band(loss, [h], "test_loss", "test loss", "C3")
        plots.seed_band(w, [h], "w_G", "w_G (C_gen)", "C2")
        plots.seed_band(w, [h], "w_M", "w_M (C_mem)", "C1")
        loss.set_yscale("log")
        loss.set_ylabel("loss")
        w.set_ylabel("weight")
        m = regimes.get(name)
        lines = [(m["t_train_fit"], ":"), (m["t_test_fit"], "--")] if m else [(ungrok["t_test_above_fit"], "--")]
        for t, ls in lines:
            if t:
                for a in (loss, w):
                    a.axvline(t, color="grey", ls=ls, lw=0.8)
        if m:
            extra = f", delay x{m['delay_factor']:.3g}" if m["delay_factor"] else ", test never fits"
            state = f"{m['status']}{extra}"
        else:
            state = f"{ungrok['status']}, P_M {p['P_M']} -> {p['ungrok_P_M']}; dashed: test loss back above fit"
        loss.set_title(f"{TITLES[name]}\n{state}", fontsize=9)
        w.set_title(f"final w_G/w_M = {h[-1]['w_G'] / h[-1]['w_M']:.4g}", fontsize=9)
        loss.legend(loc="lower left", fontsize=8)
        w.legend(loc="upper left", fontsize=8)
    for a in ax[3]:
        a.set_xlabel("steps after lowering P_M")
    for a in ax[2]:
        a.set_xlabel("step")
    pred = optimum["ratio_predicted"]
    fig.suptitle(f"toy simulation: q {p['q']}, kappa {p['kappa']}, alpha {p['alpha']}, lr {p['lr']}; "
                 f"dotted: train loss < fit, dashed: test loss < fit; optimum w_G/w_M "
                 f"{optimum['ratio_measured']:.4g} vs {pred if pred is None else f'{pred:.4g}'} predicted",
                 fontsize=9)
    plots.save(fig, run_dir)
