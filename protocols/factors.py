"""Factors: the student reports' studies (shared/seeds; THEORY.md, "What the student reports
studied"). One factor (or two) is swept over named levels and grokking is compared across them.

`params.study` (CLI: `--study NAME`) picks a study of factors.yaml's `studies:`. A study has, per
preset, `levels`: a name and config overrides (dotted keys) each, over an optional `base`; and
`claims`, each a report's claim with a written criterion. A level's config is the resolved preset
(with --set) <- the study's base <- the level's overrides. Every level x seed is a grokking run with
protocols/grokking.py's stop rule and per-seed judge, in worker processes, checkpointed in
run_dir/levels/LEVEL/seed{s}/ so a killed run resumes (a level whose config changed starts afresh).

Per level, medians over seeds: steps to fit (t_train: first eval with train accuracy >=
criteria.train_acc), steps to grok (t_test: test accuracy >= criteria.test_acc), the delay
t_test - t_train, final test accuracy. A run whose budget ends before t_test only bounds it:
t_test > last step. Comparisons use these bounds (medians of the per-seed lower and upper
bounds), so a level that never groks is still provably slower than one that does.

Claim kinds and their criteria (written in the YAML, per claim):
  groks        every seed of `levels` groks as protocols/grokking.py judges it (delay >=
               criteria.min_delay_factor x t_train, test accuracy at fit <= max_test_acc_at_fit)
  no_gap       every seed of `levels` reaches test accuracy by max_delay_factor x t_train
  no_grokking  every seed of `levels` fits train and ends with test accuracy <= max_final_test_acc
  decreasing   along `levels`: metric(next) <= max_ratio x metric(previous)
  slower       metric(level) >= min_ratio x metric(than)
  fastest      metric(other) >= min_ratio x metric(level) for every level in `others`
  similar      metric(level) / metric(to) within [1 / max_ratio, max_ratio]
  helps        `level` generalises better than `than` (report 003's data efficiency within a budget):
               holds if it reaches test accuracy min_ratio x sooner or ends with test accuracy
               higher by min_gain; fails if neither, when the sooner test is disproved or neither
               level reached test accuracy within budget
(metric: t_test, t_train or delay; default t_test). A comparison holds when the bounds prove
it, fails when they disprove it, and is inconclusive otherwise; a claim combines its parts and
the protocol's status combines the claims' (circuits.detect.combine: diverged > fails >
inconclusive > holds).
"""
from __future__ import annotations

import math
import re
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

from circuits import plots
from circuits.config import Config, deep_merge, from_dict, load_yaml, nest, protocol_fields, to_dict
from circuits.detect import Verdict, claims_from, combine, grokking_times
from circuits.errors import CircuitsError
from circuits.experiment import begin, finish, train_seed
from circuits.parallel import pmap
from circuits.progress import Bar
from circuits.store import write_config
from protocols.grokking import criteria, judge, sensitivity, stop_rule

NAME = "factors"
CLAIM = ("the student reports' claims on how a factor (architecture, fraction, operator, optimiser, regulariser) "
         "changes grokking")
DEFAULTS = {"study": None, "workers": None}
PARAMS_DOC = {
    "study": "the study of factors.yaml to run (--study NAME)",
    "workers": "worker processes (None: one per core)",
}
KINDS = {"groks": ("levels",), "no_gap": ("levels", "max_delay_factor"), "no_grokking": ("levels", "max_final_test_acc"),
         "decreasing": ("levels", "max_ratio"), "slower": ("level", "than", "min_ratio"),
         "fastest": ("level", "others", "min_ratio"), "similar": ("level", "to", "max_ratio"),
         "helps": ("level", "than", "min_ratio", "min_gain")}
METRICS = ("t_test", "t_train", "delay")
INF = math.inf


@dataclass
class Job:
    level: str
    cfg: Config            # the level's resolved config
    seed: int
    level_dir: str         # run_dir/levels/LEVEL


# ---------------------------------------------------------------- the study as data

def studies() -> dict:
    return load_yaml(Path(__file__).with_suffix(".yaml")).get("studies", {})


def study_of(cfg: Config) -> tuple[str, dict]:
    name = protocol_fields(cfg.params, DEFAULTS, "params")["study"]
    found = studies()
    if name is None:
        raise CircuitsError(f"factors needs a study: --study NAME (one of {', '.join(found)})")
    if name not in found:
        raise CircuitsError(f"unknown study {name!r} (known: {', '.join(found)})")
    return name, found[name]


def level_configs(cfg: Config, name: str, spec: dict) -> dict[str, Config]:
    """Each level's config: cfg <- the study's base for cfg.preset <- the level's overrides."""
    levels = (spec.get("levels") or {}).get(cfg.preset)
    if not levels:
        raise CircuitsError(f"study {name!r} has no levels for preset {cfg.preset!r}")
    base = (spec.get("base") or {}).get(cfg.preset) or {}
    out = {}
    for level, overrides in levels.items():
        if not re.fullmatch(r"[\w.=+-]+", str(level)):
            raise CircuitsError(f"study {name!r}: level name {level!r} may use only letters, digits and . = + - _")
        d = {**to_dict(cfg), "sweep": {}, "params": {}}
        for key, value in {**base, **(overrides or {})}.items():
            d = deep_merge(d, nest(key, value))
        try:
            out[str(level)] = from_dict(Config, d)
        except CircuitsError as e:
            raise CircuitsError(f"study {name!r}, level {level!r}: {e}") from None
        if out[str(level)].model.dropout and not honours_dropout(out[str(level)]):
            raise CircuitsError(f"study {name!r}, level {level!r}: model.dropout is ignored by this model "
                                "(the transformer has none; recurrent models only between layers, rnn_layers > 1)")
    check_claims(name, spec.get("claims") or [], list(out))
    return out


def honours_dropout(cfg: Config) -> bool:
    m = cfg.model
    return m.arch == "mlp" or (m.arch != "transformer" and m.rnn_layers > 1)


def check_claims(name: str, claims: list[dict], levels: list[str]) -> None:
    for c in claims:
        kind = c.get("kind")
        if kind not in KINDS:
            raise CircuitsError(f"study {name!r}: claim kind {kind!r} unknown (known: {', '.join(KINDS)})")
        missing = [k for k in KINDS[kind] if k not in c]
        if missing:
            raise CircuitsError(f"study {name!r}: a {kind} claim needs {', '.join(missing)}")
        if c.get("metric", "t_test") not in METRICS:
            raise CircuitsError(f"study {name!r}: claim metric must be one of {', '.join(METRICS)}, got {c['metric']!r}")
        unknown = [x for x in claim_levels(c) if x not in levels]
        if unknown:
            raise CircuitsError(f"study {name!r}: a {kind} claim names unknown level(s) {', '.join(unknown)}")


def claim_levels(c: dict) -> list[str]:
    return [*c.get("levels", []), *[c[k] for k in ("level", "than", "to") if k in c], *c.get("others", [])]


# ---------------------------------------------------------------- training

def same_training(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("task", "model", "optim", "train"))


def train_job(job: Job) -> dict:
    """One level x seed: a grokking run (resumes from its checkpoint); what the judging needs."""
    t = train_seed(job.cfg, job.seed, job.level_dir, stop=stop_rule(job.cfg), quiet=True)
    return {"history": t.result.history, "status": t.result.status, "seconds": round(t.result.seconds, 1)}


def seed_summary(out: dict, crit: dict) -> dict:
    h = out["history"]
    times = grokking_times(h, crit["test_acc"])
    return {**times, "status": judge(times, out["status"], crit), "run_status": out["status"],
            "last_step": h[-1]["step"], "final_train_acc": h[-1]["train_acc"],
            "final_test_acc": h[-1].get("test_acc"), "seconds": out["seconds"]}


def bounds(s: dict, metric: str) -> tuple[float, float]:
    """[lo, hi] for a seed's t_train, t_test or delay: exact when reached, (last step, inf) when
    the budget ended first, unknown (-inf, inf) when it diverged or (delay) never fit train."""
    if s["run_status"] == "diverged":
        return -INF, INF
    t_train, t_test, last = s["t_train"], s["t_test"], s["last_step"]
    if metric == "t_train":
        return (t_train, t_train) if t_train is not None else (last, INF)
    if metric == "t_test":
        return (t_test, t_test) if t_test is not None else (last, INF)
    if t_train is None:
        return -INF, INF
    return (t_test - t_train,) * 2 if t_test is not None else (last - t_train, INF)


def level_summary(seeds: dict[int, dict]) -> dict:
    def med(key):
        vals = [s[key] for s in seeds.values() if s.get(key) is not None]
        return statistics.median(vals) if vals else None

    out = {"steps_to_fit": med("t_train"), "steps_to_grok": med("t_test"), "delay": med("delay"),
           "delay_factor": med("delay_factor"), "final_test_acc": med("final_test_acc"),
           "seeds_grokked": sum(s["t_test"] is not None for s in seeds.values()), "n_seeds": len(seeds)}
    for metric in METRICS:
        lo, hi = zip(*(bounds(s, metric) for s in seeds.values()))
        out[f"{metric}_bounds"] = (statistics.median(lo), statistics.median(hi))
    return out


# ---------------------------------------------------------------- judging the claims

def at_most(x: tuple, y: tuple, r: float) -> str:
    """Is x <= r * y, for x in [x_lo, x_hi] and y in [y_lo, y_hi]?"""
    if x[1] <= r * y[0]:
        return "holds"
    if x[0] > r * y[1]:
        return "fails"
    return "inconclusive"


def no_gap(s: dict, max_factor: float) -> str:
    if s["run_status"] == "diverged":
        return "diverged"
    if s["t_train"] is None:
        return "inconclusive"
    limit = max_factor * max(s["t_train"], 1)
    if s["t_test"] is not None:
        return "holds" if s["t_test"] <= limit else "fails"
    return "fails" if s["last_step"] > limit else "inconclusive"     # the gap is already longer than allowed


def no_grokking(s: dict, max_acc: float, train_acc: float) -> str:
    if s["run_status"] == "diverged":
        return "diverged"
    if s["final_test_acc"] > max_acc:
        return "fails"
    return "holds" if s["final_train_acc"] >= train_acc else "inconclusive"


def helps(a: dict, b: dict, min_ratio: float, min_gain: float) -> str:
    """Level summary `a` generalises better than `b`: sooner by min_ratio, or higher final test
    accuracy by min_gain (medians over seeds)."""
    sooner = at_most(a["t_test_bounds"], b["t_test_bounds"], 1 / min_ratio)
    if sooner == "holds" or a["final_test_acc"] >= b["final_test_acc"] + min_gain:
        return "holds"
    neither = not math.isfinite(a["t_test_bounds"][1]) and not math.isfinite(b["t_test_bounds"][1])
    return "fails" if sooner == "fails" or neither else "inconclusive"


def judge_claim(c: dict, per_level: dict[str, dict], summaries: dict[str, dict], crit: dict) -> dict:
    """One claim's status and the numbers it was judged on."""
    kind, names = c["kind"], claim_levels(c)
    seeds = [s for n in names for s in per_level[n].values()]
    if kind in ("groks", "no_gap", "no_grokking"):
        per_seed = {"groks": lambda s: s["status"], "no_gap": lambda s: no_gap(s, c.get("max_delay_factor")),
                    "no_grokking": lambda s: no_grokking(s, c.get("max_final_test_acc"), crit["train_acc"])}[kind]
        parts = [per_seed(s) for s in seeds]
        evidence = {n: {seed: {k: s[k] for k in ("t_train", "t_test", "delay_factor", "final_test_acc", "status")}
                        for seed, s in per_level[n].items()} for n in names}
    else:
        metric = c.get("metric", "t_test")
        b = {n: summaries[n][f"{metric}_bounds"] for n in names}
        if kind == "decreasing":
            parts = [at_most(b[nxt], b[prev], c["max_ratio"]) for prev, nxt in zip(c["levels"], c["levels"][1:])]
        elif kind == "slower":
            parts = [at_most(b[c["than"]], b[c["level"]], 1 / c["min_ratio"])]
        elif kind == "fastest":
            parts = [at_most(b[c["level"]], b[o], 1 / c["min_ratio"]) for o in c["others"]]
        elif kind == "similar":
            parts = [at_most(b[c["level"]], b[c["to"]], c["max_ratio"]), at_most(b[c["to"]], b[c["level"]], c["max_ratio"])]
        else:
            parts = [helps(summaries[c["level"]], summaries[c["than"]], c["min_ratio"], c["min_gain"])]
        if any(s["run_status"] == "diverged" for s in seeds):
            parts.append("diverged")
        evidence = {n: {"metric": metric, "median_bounds": [_json(v) for v in b[n]],
                        "final_test_acc": summaries[n]["final_test_acc"]} for n in names}
    criterion = {k: v for k, v in c.items() if k not in ("claim", "source")}
    return {"claim": c.get("claim", ""), "source": c.get("source", ""), "status": combine(parts),
            "criterion": criterion, "evidence": evidence}


def judge_claims(claims: list[dict], per_level: dict[str, dict], crit: dict) -> list[dict]:
    """Every claim of a study from the per-seed summaries of its levels (pure): [judge_claim(...)]."""
    summaries = {level: level_summary(seeds) for level, seeds in per_level.items()}
    return [judge_claim(c, per_level, summaries, crit) for c in claims]


# a claim's own thresholds and their neighbouring values for measured.sensitivity
def neighbours(key: str, x: float) -> list[float]:
    if key in ("min_ratio", "max_ratio", "max_delay_factor"):       # a ratio: half and twice its distance from 1
        return sorted({round(1 + (x - 1) / 2, 4), x, round(1 + 2 * (x - 1), 4)})
    if key == "max_final_test_acc":
        return [0.3, 0.5, 0.7]
    if key == "min_gain":
        return [x / 2, x, 2 * x]
    return [x]


CLAIM_THRESHOLDS = ("min_ratio", "max_ratio", "max_delay_factor", "max_final_test_acc", "min_gain")
SENSITIVITY = {"min_delay_factor": [1.5, 2.0, 3.0], "max_test_acc_at_fit": [0.3, 0.5, 0.7], "test_acc": [0.95, 0.99]}


def claims_sensitivity(claims: list[dict], outs: dict[str, dict[int, dict]], crit: dict) -> dict:
    """{claim text: {threshold: {value: status}}}: each claim re-judged with one of its own thresholds, or
    one of the grokking criteria (per-seed judging; test_acc only downwards, runs stop there), moved."""
    def per_level(c: dict) -> dict:
        return {lv: {seed: seed_summary(o, c) for seed, o in seeds.items()} for lv, seeds in outs.items()}

    base = per_level(crit)
    out = {}
    for c in claims:
        row = {k: {str(v): judge_claims([{**c, k: v}], base, crit)[0]["status"] for v in neighbours(k, c[k])}
               for k in CLAIM_THRESHOLDS if k in c}
        # the per-seed grokking judge decides only `groks` claims; test_acc moves every t_test
        grid = {k: v for k, v in SENSITIVITY.items() if c["kind"] == "groks" or k == "test_acc"}
        row.update(sensitivity(lambda cr: judge_claims([c], per_level(cr), cr)[0]["status"], crit, grid))
        out[claim_text(c)] = row
    return out


def claim_text(c: dict) -> str:
    """A claim's text (its `claim:`, else its kind and levels): the key of measured.claims."""
    crit = c.get("criterion", c)
    return c.get("claim") or f"{crit['kind']} {', '.join(claim_levels(crit))}"


def _json(x):
    return None if x is None or math.isinf(x) else x


# ---------------------------------------------------------------- the protocol

def run(cfg: Config, run_dir) -> Verdict:
    name, spec = study_of(cfg)
    workers = protocol_fields(cfg.params, DEFAULTS, "params")["workers"]
    crit = criteria(cfg)
    configs = level_configs(cfg, name, spec)
    started = begin(cfg, run_dir)
    jobs = []
    for level, c in configs.items():
        level_dir = Path(run_dir) / "levels" / level
        if (level_dir / "config.yaml").exists() and not same_training(load_yaml(level_dir / "config.yaml"), to_dict(c)):
            shutil.rmtree(level_dir)                 # checkpoints of another config: never resume from them
        write_config(level_dir, c)
        jobs += [Job(level, c, seed, str(level_dir)) for seed in c.seeds]
    bar = Bar(f"factors {name}: {len(configs)} levels x {len(cfg.seeds)} seeds")
    outs = pmap(train_job, jobs, workers, on_done=bar)
    bar.close()
    outs_by_level: dict[str, dict] = {level: {} for level in configs}
    for job, out in zip(jobs, outs):
        outs_by_level[job.level][job.seed] = out
    per_level = {level: {seed: seed_summary(o, criteria(configs[level])) for seed, o in seeds.items()}
                 for level, seeds in outs_by_level.items()}
    summaries = {level: level_summary(seeds) for level, seeds in per_level.items()}
    claims = judge_claims(spec.get("claims") or [], per_level, crit)
    levels = {level: {"overrides": {**((spec.get("base") or {}).get(cfg.preset) or {}),
                                    **(spec["levels"][cfg.preset][level] or {})},
                      **{k: ([_json(x) for x in v] if k.endswith("_bounds") else v) for k, v in summaries[level].items()},
                      "per_seed": per_level[level]} for level in configs}
    statuses = [c["status"] for c in claims]
    measured = {"study": name, "n_claims": len(claims), **{f"n_{s}": statuses.count(s) for s in
                                                            ("holds", "fails", "inconclusive", "diverged")},
                "claims": claims_from({claim_text(c): c["status"] for c in claims}), "levels": levels,
                "claim_details": claims,
                "sensitivity": claims_sensitivity(spec.get("claims") or [], outs_by_level, crit)}
    verdict = Verdict(NAME, spec.get("claim", CLAIM), combine(statuses) if claims else "inconclusive", measured,
                      {**crit, "claims": [c["criterion"] for c in claims]}, seeds=list(cfg.seeds))
    figure(cfg, name, jobs, outs, summaries, per_level, claims, run_dir)
    return finish(cfg, run_dir, verdict, {f"{j.level}/seed{j.seed}": o["history"] for j, o in zip(jobs, outs)}, started)


def figure(cfg: Config, name: str, jobs: list[Job], outs: list[dict], summaries: dict, per_level: dict,
           claims: list[dict], run_dir) -> None:
    """Left: train (dashed) and test (solid) accuracy per level, one line per seed. Middle: the delay
    per level (dots; a triangle is a lower bound: not grokked within budget). Right: final test accuracy."""
    levels = list(summaries)
    fig, ax = plots.subplots(1, 3, figsize=(15, 4.6 + 0.15 * len(claims)), gridspec_kw={"width_ratios": [2, 1, 1]})
    curves, delay, final = ax[0]
    colour = {lv: f"C{i % 10}" for i, lv in enumerate(levels)}
    for job, out in zip(jobs, outs):
        h = [r for r in out["history"] if r["step"] > 0]
        first = job.seed == job.cfg.seeds[0]
        curves.plot([r["step"] for r in h], [r.get("test_acc", math.nan) for r in h], color=colour[job.level], lw=1.1,
                    label=job.level if first else None)
        curves.plot([r["step"] for r in h], [r["train_acc"] for r in h], color=colour[job.level], lw=0.7, ls="--", alpha=0.6)
    curves.set(xscale="log", xlabel="step", ylabel="accuracy (solid: test, dashed: train)")
    curves.legend(fontsize=7, loc="center left")
    for i, lv in enumerate(levels):
        for s in per_level[lv].values():
            lo, hi = bounds(s, "delay")
            if math.isfinite(hi):
                delay.scatter(i, max(hi, 1), color=colour[lv], s=22, zorder=3)
            elif math.isfinite(lo):
                delay.scatter(i, max(lo, 1), color=colour[lv], marker="^", facecolors="none", s=40, zorder=3)
            final.scatter(i, s["final_test_acc"], color=colour[lv], s=22, zorder=3)
        if summaries[lv]["delay"] is not None:
            delay.hlines(max(summaries[lv]["delay"], 1), i - 0.3, i + 0.3, color=colour[lv])
    for a, label in ((delay, "delay t_test - t_train (steps)"), (final, "final test accuracy")):
        a.set_xticks(range(len(levels)))
        a.set_xticklabels(levels, rotation=35, ha="right", fontsize=7)
        a.set_ylabel(label)
    delay.set_yscale("log")
    final.set_ylim(-0.05, 1.05)
    curves.set_title(f"factors: {name} ({cfg.preset}), {len(cfg.seeds)} seed(s)", fontsize=9)
    delay.set_title("triangle: lower bound (not grokked within budget)", fontsize=8)
    fig.suptitle("\n".join(f"{c['status']}: {c['claim']} ({c['source']})" for c in claims), fontsize=8, x=0.01, ha="left")
    plots.save(fig, run_dir, cfg)
