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

Checks (criteria in simulation.yaml), each read on the curves' own scales: t_train(f), t_test(f) are
the first steps at which the train / test loss has covered a fraction f of its own way from its
initial to its final value, for every f in criteria.fractions (no absolute loss threshold: at absolute
thresholds the delay in (c) grows from x1.1 to x17 as the test threshold goes from 1.5 to 0.1, and in
(a) a train threshold below the C_mem plateau (0.065) moves t_train to the grokking step).
(a) grokking: at every f the test loss has not fallen at t_train(f) (still >= 0.9 x its initial value)
and t_test(f) >= 10 x t_train(f); (b) inefficient_gen: P_G > P_M, the test loss never falls (to half
its initial value); (c) equal_speed: w_G2 = w_M2, at every f the test loss has made at least a quarter
as much of its own fall as the train loss has of its own (it falls together with it, where in (a) it
rises); ungrokking: after (a), P_M lowered below P_G, the weight moves back to C_mem and the test loss
climbs at least half-way back to ln q; optimum: w_G/w_M at the end of (a) against the closed form.
measured.sensitivity re-judges each with one criterion moved to its neighbouring values, and
measured.absolute_threshold_delays gives the delays the absolute thresholds would read.
Deterministic: no seeds.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from circuits import plots
from circuits.config import Config, protocol_fields
from circuits.detect import Verdict, claims_from, combine
from circuits.errors import CircuitsError
from circuits.experiment import begin, finish
from protocols.grokking import sensitivity as grokking_sensitivity

NAME = "simulation"
CLAIM = ("toy model: an efficient, slowly learned C_gen groks; an inefficient one never generalises; "
         "equal speeds give no delay; lowering P_M ungroks")

DEFAULTS = {"q": 113, "P_G": 1.0, "P_M": 2.0, "kappa": 1.2, "alpha": 0.005, "lr": 0.01,
            "w_G1": 0.0, "w_G2": 0.005, "w_M1": 0.0, "w_M2": 1.0, "steps": 100_000,
            "inefficient_P_G": 2.0, "inefficient_P_M": 1.0, "equal_w_G2": 1.0,
            "ungrok_P_M": 0.5, "ungrok_steps": 20_000, "points_per_decade": 50}
PARAMS_DOC = {"q": "number of classes", "P_G": "C_gen's norm per unit weight", "P_M": "C_mem's norm per unit weight",
              "kappa": "circuit norm P_i w^(1/kappa)", "alpha": "weight decay strength", "lr": "gradient-descent learning rate",
              "w_G1": "C_gen's first sub-weight at init", "w_G2": "C_gen's second sub-weight at init (small: it learns slowly)",
              "w_M1": "C_mem's first sub-weight at init", "w_M2": "C_mem's second sub-weight at init",
              "steps": "gradient-descent steps per regime", "inefficient_P_G": "P_G of the inefficient-C_gen regime (b)",
              "inefficient_P_M": "P_M of regime (b)", "equal_w_G2": "w_G2 of the equal-speed regime (c)",
              "ungrok_P_M": "P_M after the switch in the ungrokking regime", "ungrok_steps": "steps after that switch",
              "points_per_decade": "recorded points per decade of steps (log-spaced)"}
CRITERIA = {"fractions": [0.25, 0.5, 0.75, 0.9], "test_fall": 0.5, "min_delay_factor": 10.0,
            "min_test_loss_ratio_at_fit": 0.9, "min_test_share": 0.25, "ungrok_min_rise": 0.5,
            "optimum_rtol": 0.05, "converged_rtol": 1e-3}
SENSITIVITY = {"fractions": [[0.1], [0.25], [0.5], [0.75], [0.9], [0.95], [0.98]],
               "test_fall": [0.25, 0.5, 0.75], "min_delay_factor": [5.0, 10.0, 20.0],
               "min_test_loss_ratio_at_fit": [0.8, 0.9, 1.0], "min_test_share": [0.1, 0.25, 0.4],
               "ungrok_min_rise": [0.25, 0.5, 0.75, 1.0], "optimum_rtol": [0.01, 0.05, 0.1],
               "converged_rtol": [1e-4, 1e-3, 1e-2]}
CLAIMS = {"grokking": "(a) all three ingredients: test loss falls only long after train loss",
          "inefficient_gen": "(b) a less efficient C_gen (P_G > P_M): test loss never falls",
          "equal_speed": "(c) equal learning speeds: test loss falls together with train loss",
          "ungrokking": "after (a), P_M lowered below P_G: the logit moves back to C_mem and test loss rises",
          "optimum": "at the optimum w_G / w_M = (P_G / P_M)^(-2 kappa / (2 - kappa))"}
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


def fall_step(x, frac: float) -> int | None:
    """First step at which the loss curve x has covered `frac` of its own way from x[0] to x[-1] (the
    curve's own scale: no absolute threshold); None when it ends no lower than it started."""
    start, end = float(x[0]), float(x[-1])
    if not end < start:
        return None
    hit = (x <= start - frac * (start - end)).nonzero()
    return int(hit[0]) if len(hit) else None


def log_steps(n: int, per_decade: int) -> list[int]:
    grid = torch.logspace(0, math.log10(n), max(2, int(per_decade * math.log10(n))), dtype=f64)
    return sorted({0, n, *grid.round().long().tolist()})


def history(trace, losses, run: int, steps: list[int], offset: int = 0) -> list[dict]:
    train, test = losses
    return [{"step": s + offset, "train_loss": float(train[s, run]), "test_loss": float(test[s, run]),
             "w_G": float(trace[s, 0, run]), "w_M": float(trace[s, 1, run])} for s in steps]


def regime_numbers(train, test, crit: dict) -> dict:
    """A regime's readings from its train and test loss curves (1-D, one entry per step). Per fraction f
    of criteria.fractions: t_train(f), t_test(f) (fall_step), the delay t_test(f) / t_train(f), the test
    loss at t_train(f) and the share of its own fall the test loss has made by then. `fell`: the test
    loss reached criteria.test_fall x its initial value at some step."""
    fr = [float(f) for f in crit["fractions"]]
    init, end = float(test[0]), float(test[-1])
    t_tr = [fall_step(train, f) for f in fr]
    t_te = [fall_step(test, f) for f in fr]
    at = [float(test[t]) if t is not None else None for t in t_tr]
    share = [(init - v) / (init - end) if v is not None and end < init else None for v in at]
    return {"fractions": fr, "t_train": t_tr, "t_test": t_te,
            "delay_factor": [b / max(a, 1) if a is not None and b is not None else None for a, b in zip(t_tr, t_te)],
            "test_loss_at_train": at, "test_share_at_train": share,
            "t_train_half": fall_step(train, 0.5), "t_test_half": fall_step(test, 0.5),
            "test_loss_init": init, "test_loss_min": float(test.min()), "test_loss_max": float(test.max()),
            "fell": float(test.min()) <= crit["test_fall"] * init,
            "final_train_loss": float(train[-1]), "final_test_loss": end}


def judge(regime: str, m: dict, crit: dict) -> str:
    """One regime from its readings (regime_numbers), at every fraction of criteria.fractions:
    (a) grokking      holds when at every f the test loss is still >= min_test_loss_ratio_at_fit x its
                      initial value at t_train(f) and t_test(f) >= min_delay_factor x t_train(f);
    (b) inefficient   holds when the test loss never fell (to test_fall x its initial value);
    (c) equal speed   holds when at every f the test loss has made at least min_test_share x f of its
                      own fall by t_train(f): it falls together with the train loss.
    inconclusive when the train loss never fell, or (a), (c) when the test loss has not fallen yet."""
    if None in m["t_train"]:
        return "inconclusive"                      # the train loss never fell: nothing to judge
    if regime == "inefficient_gen":
        return "fails" if m["fell"] else "holds"
    if not m["fell"] or None in m["t_test"]:
        return "inconclusive"                      # no generalisation within params.steps (yet)
    if regime == "grokking":
        high = all(v >= crit["min_test_loss_ratio_at_fit"] * m["test_loss_init"] for v in m["test_loss_at_train"])
        late = all(d >= crit["min_delay_factor"] for d in m["delay_factor"])
        return "holds" if high and late else "fails"
    together = all(s >= crit["min_test_share"] * f for s, f in zip(m["test_share_at_train"], m["fractions"]))
    return "holds" if together else "fails"


def optimum_check(trace, p: dict, crit: dict) -> dict:
    """w_G/w_M at the end of regime (a) against the closed form; judged only once it has stopped moving."""
    ratio = lambda t: float(trace[t, 0, 0] / trace[t, 1, 0])  # noqa: E731
    measured, earlier = ratio(-1), ratio(int(0.9 * (len(trace) - 1)))
    out = {"ratio_measured": measured, "ratio_predicted": None, "rel_err": None,
           "ratio_change_last_10pct": abs(measured / earlier - 1)}
    if p["kappa"] < 2:
        out["ratio_predicted"] = optimum_ratio(p["P_G"], p["P_M"], p["kappa"])
        out["rel_err"] = abs(measured / out["ratio_predicted"] - 1)
    out["status"] = judge_optimum(out, crit)
    if out["ratio_predicted"] is None:
        out["note"] = "the closed form needs kappa < 2"
    elif out["status"] == "inconclusive":
        out["note"] = "not converged within params.steps"
    return out


def judge_optimum(o: dict, crit: dict) -> str:
    if o["ratio_predicted"] is None or o["ratio_change_last_10pct"] > crit["converged_rtol"]:
        return "inconclusive"
    return "holds" if o["rel_err"] <= crit["optimum_rtol"] else "fails"


def ungrok_numbers(before, trace_u, losses_u, test_init: float, p: dict, crit: dict) -> dict:
    test = losses_u[1][:, 0]
    m = {"P_M_after": p["ungrok_P_M"], "steps": p["ungrok_steps"],
         "w_G_before": float(before[0]), "w_M_before": float(before[1]),
         "w_G_after": float(trace_u[-1, 0, 0]), "w_M_after": float(trace_u[-1, 1, 0]),
         "test_loss_init": test_init, "test_loss_before": float(test[0]), "test_loss_after": float(test[-1]),
         "train_loss_after": float(losses_u[0][-1, 0])}
    m["rise_level"] = rise_level(m, crit)
    m["t_test_above_level"] = next((int(i) for i in (test >= m["rise_level"]).nonzero()[:1]), None)
    if p["kappa"] < 2:
        m["ratio_predicted"] = optimum_ratio(p["P_G"], p["ungrok_P_M"], p["kappa"])
    m["ratio_after"] = m["w_G_after"] / m["w_M_after"]
    return {**m, "status": judge_ungrok(m, crit)}


def rise_level(m: dict, crit: dict) -> float:
    """The test loss that undoes criteria.ungrok_min_rise of the generalisation: that share of the way
    from its value before (grokked) back up to its value at initialisation (ln q)."""
    return m["test_loss_before"] + crit["ungrok_min_rise"] * (m["test_loss_init"] - m["test_loss_before"])


def judge_ungrok(m: dict, crit: dict) -> str:
    """Holds when the logit moved back to C_mem (w_M grew, w_G shrank) and the test loss rose to rise_level."""
    moved = m["w_M_after"] > m["w_M_before"] and m["w_G_after"] < m["w_G_before"]
    ok = moved and m["test_loss_after"] >= rise_level(m, crit)
    return "holds" if ok else "fails"


AFFECTS = {"fractions": ("grokking", "equal_speed"), "test_fall": REGIMES, "min_delay_factor": ("grokking",),
           "min_test_loss_ratio_at_fit": ("grokking",), "min_test_share": ("equal_speed",),
           "ungrok_min_rise": ("ungrokking",), "optimum_rtol": ("optimum",), "converged_rtol": ("optimum",)}


def statuses_at(curves: dict, ungrok: dict, optimum: dict, crit: dict) -> dict:
    """Every sub-claim's status under criteria `crit` (curves: regime -> (train, test) loss curves)."""
    st = {r: judge(r, regime_numbers(*curves[r], crit), crit) for r in REGIMES}
    return {**st, "ungrokking": judge_ungrok(ungrok, crit), "optimum": judge_optimum(optimum, crit)}


def sensitivity(curves: dict, ungrok: dict, optimum: dict, crit: dict) -> dict:
    """The sub-claims a criterion affects, re-judged with it moved to each neighbouring value (SENSITIVITY)."""
    out = grokking_sensitivity(lambda c: statuses_at(curves, ungrok, optimum, c), crit, SENSITIVITY)
    return {k: {v: {r: s[r] for r in AFFECTS[k]} for v, s in vals.items()} for k, vals in out.items()}


def absolute_delays(curves: dict) -> dict:
    """The delay t_test / t_train at absolute loss thresholds (the criterion this protocol used before):
    it moves with the thresholds, which is why the verdict reads the curves' own scales instead."""
    out = {}
    for a in (0.1, 0.05):
        for b in (1.5, 1.0, 0.5, 0.1):
            row = {}
            for r in ("grokking", "equal_speed"):
                t_a, t_b = first_below(curves[r][0], a), first_below(curves[r][1], b)
                row[r] = None if t_a is None or t_b is None else round(t_b / max(t_a, 1), 2)
            out[f"train<{a}, test<{b}"] = row
    return out


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

    curves = {r: (losses[0][:, i], losses[1][:, i]) for i, r in enumerate(REGIMES)}
    regimes = {r: regime_numbers(*curves[r], crit) for r in REGIMES}
    for i, (r, m) in enumerate(regimes.items()):
        m.update(status=judge(r, m, crit), final_w_G=float(trace[-1, 0, i]), final_w_M=float(trace[-1, 1, i]))
    ungrok = ungrok_numbers(trace[-1, :, 0], trace_u, losses_u, float(losses[1][0, 0]), p, crit)
    optimum = optimum_check(trace, p, crit)
    statuses = {**{r: m["status"] for r, m in regimes.items()}, "ungrokking": ungrok["status"],
                "optimum": optimum["status"]}
    finite = all(bool(torch.isfinite(x).all()) for x in (trace, trace_u, *losses, *losses_u))
    status = combine(list(statuses.values())) if finite else "diverged"
    g, c = regimes["grokking"], regimes["equal_speed"]
    measured = {"min_delay_factor_grokking": _min(g["delay_factor"]),
                "min_test_share_ratio_equal_speed": _min([s / f if s is not None else None
                                                          for s, f in zip(c["test_share_at_train"], c["fractions"])]),
                "final_test_loss_inefficient_gen": regimes["inefficient_gen"]["final_test_loss"],
                "ungrok_test_loss_after": ungrok["test_loss_after"],
                "optimum_ratio_measured": optimum["ratio_measured"],
                "optimum_ratio_predicted": optimum["ratio_predicted"],
                "max_delay_factor_equal_speed": _max(c["delay_factor"]),
                "statuses": statuses, "claims": claims_from({CLAIMS[k]: s for k, s in statuses.items()}),
                "regimes": regimes, "ungrokking": ungrok, "optimum": optimum,
                "sensitivity": sensitivity(curves, ungrok, optimum, crit),
                "absolute_threshold_delays": absolute_delays(curves),
                "simulation_seconds": round(seconds, 2)}
    grid, grid_u = log_steps(steps, p["points_per_decade"]), log_steps(u_steps, p["points_per_decade"])
    histories = {r: history(trace, losses, i, grid) for i, r in enumerate(REGIMES)}
    histories["ungrokking"] = history(trace_u, losses_u, 0, grid_u, offset=steps)
    figure(histories, regimes, ungrok, optimum, p, steps, run_dir)
    verdict = Verdict(NAME, CLAIM, status, measured, crit, seeds=[])
    return finish(cfg, run_dir, verdict, histories, started)


def _min(xs):
    xs = [x for x in xs if x is not None]
    return min(xs) if xs else None


def _max(xs):
    xs = [x for x in xs if x is not None]
    return max(xs) if xs else None


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
        lines = [(m["t_train_half"], ":"), (m["t_test_half"], "--")] if m else [(ungrok["t_test_above_level"], "--")]
        for t, ls in lines:
            if t:
                for a in (loss, w):
                    a.axvline(t, color="grey", ls=ls, lw=0.8)
        if m:
            if name == "equal_speed":
                shares = ", ".join(f"{x:.2f}" if x is not None else "-" for x in m["test_share_at_train"])
                state = f"{m['status']}; when train loss is {m['fractions']} of its way down, test loss is {shares}"
            else:
                delays = ", ".join(f"{d:.3g}" if d is not None else "-" for d in m["delay_factor"])
                state = f"{m['status']}; delay at fractions {m['fractions']} of the falls: x {delays}"
            if not m["fell"]:
                state = f"{m['status']}; test loss never fell"
        else:
            state = f"{ungrok['status']}, P_M {p['P_M']} -> {p['ungrok_P_M']}; dashed: test loss back up to the rise level"
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
                 f"dotted / dashed: train / test loss half-way down its own fall; optimum w_G/w_M "
                 f"{optimum['ratio_measured']:.4g} vs {pred if pred is None else f'{pred:.4g}'} predicted",
                 fontsize=9)
    plots.save(fig, run_dir)
