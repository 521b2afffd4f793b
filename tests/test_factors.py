"""The `factors` protocol: studies resolve to the right level configs, bad studies are one clear
error, claims are judged right on synthetic numbers, and one small real study runs end to end."""
import json
import math
from pathlib import Path

import pytest

from circuits.config import Config, ModelConfig, OptimConfig, TaskConfig, TrainConfig, load_yaml, resolve
from circuits.errors import CircuitsError
from protocols import factors
from protocols.factors import at_most, bounds, helps, judge_claim, level_configs, level_summary, no_gap, no_grokking

INF = math.inf
PRESETS = load_yaml(Path(factors.__file__).with_suffix(".yaml"))["presets"]


def _cfg(study, preset="quick", overrides=()):
    return resolve("factors", PRESETS, preset, overrides=[f"params.study={study}", *overrides])


def _levels(study, preset="quick", overrides=()):
    return level_configs(_cfg(study, preset, overrides), study, factors.studies()[study])


@pytest.mark.parametrize("preset", ["quick", "paper"])
@pytest.mark.parametrize("study", ["architectures", "fraction", "operators", "optimizers", "regularizers"])
def test_every_study_resolves_for_every_preset(study, preset):
    levels = _levels(study, preset)
    assert len(levels) >= 3
    assert all(isinstance(c, Config) and c.protocol == "factors" and not c.sweep for c in levels.values())


def test_levels_are_the_preset_plus_their_overrides():
    fr = _levels("fraction")
    assert [c.task.frac for c in fr.values()] == [0.3, 0.5, 0.7, 0.05]
    assert fr["p=113_frac=0.05"].task.p == 113 and fr["frac=0.3"].task.p == 47
    assert all(c.optim.lr == 3e-3 and c.model.arch == "mlp" for c in fr.values())     # untouched: the preset's
    reg = _levels("regularizers")
    assert reg["wd-init"].optim.decay_to_init and reg["wd-init"].optim.weight_decay == 1.0
    assert not reg["wd-zero"].optim.decay_to_init and reg["wd-zero"].optim.weight_decay == 1.0
    assert reg["none"].optim.weight_decay == 0.0 and reg["dropout"].model.dropout > 0
    assert reg["grad-noise"].optim.grad_noise > 0 and reg["weight-noise"].optim.weight_noise > 0
    assert all(c.train.steps == 4000 for c in reg.values())                              # the study's base
    arch = _levels("architectures")
    assert [c.model.arch for c in arch.values()] == ["transformer", "transformer", "mlp", "lstm", "rnn", "birnn"]
    assert arch["transformer-2"].model.n_layers == 2 and arch["birnn"].model.rnn_layers == 3
    opt = _levels("optimizers")
    assert opt["sgd-nesterov"].optim.name == "sgd" and opt["sgd-nesterov"].optim.nesterov
    assert opt["adamw-minibatch"].optim.batch_size > 0 and opt["adamw"].optim.batch_size == 0
    ops = _levels("operators")
    assert ops["div"].task.op == ops["div-mlp"].task.op == "/" and ops["div-mlp"].model.arch == "mlp"
    assert ops["div"].model.arch == "transformer" and [ops[f"K={k}"].task.k for k in (2, 3, 4)] == [2, 3, 4]
    assert {ops[n].task.layout for n in ("add", "add-xopy=", "add-xy")} == {"xy=", "xopy=", "xy"}


def test_user_overrides_reach_every_level_unless_the_level_sets_them():
    fr = _levels("fraction", overrides=["train.steps=123", "task.frac=0.9"])
    assert all(c.train.steps == 123 for c in fr.values())
    assert [c.task.frac for c in fr.values()] == [0.3, 0.5, 0.7, 0.05]                   # the factor wins


@pytest.mark.parametrize("study,match", [(None, "factors needs a study"), ("nope", "unknown study 'nope'")])
def test_unknown_or_missing_study(study, match):
    cfg = resolve("factors", PRESETS, "quick", overrides=[f"params.study={study}"] if study else [])
    with pytest.raises(CircuitsError, match=match):
        factors.study_of(cfg)


def _spec(levels, claims=()):
    return {"levels": {"quick": levels}, "claims": list(claims)}


@pytest.mark.parametrize("levels,claims,match", [
    ({"a": {"model.nope": 1}}, [], "level 'a': unknown config key 'model.nope'"),
    ({"a": {"task.frac": 2.0}}, [], r"level 'a': task.frac must be in \(0, 1\]"),
    ({"a": {"model.arch": "transformer", "model.dropout": 0.1}}, [], "model.dropout is ignored"),
    ({"a b": {}}, [], "level name 'a b'"),
    ({"a": {}}, [{"kind": "groks", "levels": ["b"]}], "unknown level"),
    ({"a": {}}, [{"kind": "faster", "levels": ["a"]}], "claim kind 'faster' unknown"),
    ({"a": {}}, [{"kind": "slower", "level": "a"}], "needs than, min_ratio"),
    ({"a": {}, "b": {}}, [{"kind": "slower", "level": "a", "than": "b", "min_ratio": 1.2, "metric": "loss"}], "metric"),
])
def test_bad_study_definitions_are_one_clear_error(levels, claims, match):
    with pytest.raises(CircuitsError, match=match):
        level_configs(_cfg("fraction"), "s", _spec(levels, claims))


def test_a_study_without_levels_for_the_preset():
    with pytest.raises(CircuitsError, match="no levels for preset 'paper'"):
        level_configs(_cfg("fraction", "paper"), "s", _spec({"a": {}}))


# ---------------------------------------------------------------- judging on synthetic numbers

def _seed(t_train, t_test, last=3000, status=None, final_test=None, final_train=1.0):
    run = status or ("stopped" if t_test is not None else "done")
    delay = None if t_train is None or t_test is None else t_test - t_train
    return {"t_train": t_train, "t_test": t_test, "delay": delay,
            "delay_factor": None if delay is None else t_test / max(t_train, 1),
            "test_acc_at_fit": 0.0, "status": "holds" if delay is not None and delay >= 2 * t_train else "inconclusive",
            "run_status": run, "last_step": t_test if t_test is not None else last,
            "final_train_acc": final_train, "final_test_acc": 0.99 if t_test is not None else (final_test or 0.0),
            "seconds": 1.0}


def test_bounds():
    assert bounds(_seed(50, 1650), "t_test") == (1650, 1650) and bounds(_seed(50, 1650), "delay") == (1600, 1600)
    assert bounds(_seed(50, None, last=3000), "t_test") == (3000, INF)
    assert bounds(_seed(50, None, last=3000), "delay") == (2950, INF)
    assert bounds(_seed(None, None), "delay") == (-INF, INF)
    assert bounds(_seed(50, None, status="diverged"), "t_test") == (-INF, INF)


def test_at_most():
    assert at_most((100, 100), (200, 200), 0.8) == "holds"
    assert at_most((190, 190), (200, 200), 0.8) == "fails"
    assert at_most((3000, INF), (1000, 1000), 1.0) == "fails"          # never grokked: provably not sooner
    assert at_most((1000, 1000), (3000, INF), 0.8) == "holds"          # sooner than one that never grokked
    assert at_most((3000, INF), (3000, INF), 0.8) == "inconclusive"    # neither grokked
    assert at_most((-INF, INF), (100, 100), 1.0) == "inconclusive"


def test_no_gap_and_no_grokking():
    assert no_gap(_seed(200, 275), 1.5) == "holds"
    assert no_gap(_seed(50, 1650), 1.5) == "fails"
    assert no_gap(_seed(50, None, last=3000), 1.5) == "fails"             # the gap is already longer than allowed
    assert no_gap(_seed(2500, None, last=3000), 1.5) == "inconclusive"
    assert no_gap(_seed(None, None), 1.5) == "inconclusive"
    assert no_gap(_seed(50, None, status="diverged"), 1.5) == "diverged"
    assert no_grokking(_seed(50, None, final_test=0.02), 0.5, 0.99) == "holds"
    assert no_grokking(_seed(50, 1650), 0.5, 0.99) == "fails"
    assert no_grokking(_seed(None, None, final_test=0.02, final_train=0.4), 0.5, 0.99) == "inconclusive"


def _summaries(**levels):
    return {name: level_summary(dict(enumerate(seeds))) for name, seeds in levels.items()}


def _judge(claim, **levels):
    per_level = {n: dict(enumerate(s)) for n, s in levels.items()}
    return judge_claim(claim, per_level, _summaries(**levels), {"train_acc": 0.99})["status"]


def test_level_summary_medians_and_bounds():
    s = _summaries(a=[_seed(50, 1600), _seed(50, 1700), _seed(50, None, last=3000)])["a"]
    assert s["steps_to_grok"] == 1650 and s["steps_to_fit"] == 50 and s["seeds_grokked"] == 2
    assert s["t_test_bounds"] == (1700, 1700)                               # median of lo (1600, 1700, 3000), of hi


def test_comparison_claims():
    fast, slow, never = [_seed(50, 600), _seed(50, 700)], [_seed(50, 1600), _seed(50, 1700)], [_seed(50, None)] * 2
    dec = {"kind": "decreasing", "levels": ["a", "b", "c"], "metric": "delay", "max_ratio": 0.8}
    assert _judge(dec, a=never, b=slow, c=fast) == "holds"
    assert _judge(dec, a=slow, b=never, c=fast) == "fails"
    assert _judge(dec, a=never, b=never, c=fast) == "inconclusive"
    slower = {"kind": "slower", "level": "a", "than": "b", "min_ratio": 1.25}
    assert _judge(slower, a=slow, b=fast) == "holds" and _judge(slower, a=fast, b=slow) == "fails"
    assert _judge(slower, a=[_seed(50, 1700)], b=[_seed(50, 1650)]) == "fails"   # 3% longer is not 1.25x
    fastest = {"kind": "fastest", "level": "a", "others": ["b", "c"], "min_ratio": 1.25}
    assert _judge(fastest, a=fast, b=slow, c=never) == "holds"
    assert _judge(fastest, a=slow, b=fast, c=never) == "fails"
    similar = {"kind": "similar", "level": "a", "to": "b", "max_ratio": 1.25}
    assert _judge(similar, a=slow, b=[_seed(50, 1500)]) == "holds" and _judge(similar, a=fast, b=slow) == "fails"
    diverged = [_seed(50, None, status="diverged")]
    assert _judge(slower, a=diverged, b=fast) == "diverged"


def test_helps():
    s = _summaries(grok=[_seed(50, 2800)], never=[_seed(50, None, final_test=0.0)],
                   some=[_seed(50, None, final_test=0.3)], none2=[_seed(50, None, final_test=0.05)])
    assert helps(s["grok"], s["never"], 1.25, 0.1) == "holds"
    assert helps(s["some"], s["never"], 1.25, 0.1) == "holds"          # data efficiency: higher test accuracy
    assert helps(s["none2"], s["never"], 1.25, 0.1) == "fails"         # neither grokked, no gain
    assert helps(s["never"], s["grok"], 1.25, 0.1) == "fails"


def test_groks_claim_combines_the_grokking_judge_of_every_seed():
    claim = {"kind": "groks", "levels": ["a", "b"]}
    assert _judge(claim, a=[_seed(50, 1600)], b=[_seed(100, 900)]) == "holds"
    assert _judge(claim, a=[_seed(50, 1600)], b=[_seed(50, None)]) == "inconclusive"


# ---------------------------------------------------------------- one small real study

TINY = {"tiny": {"claim": "a tiny study", "levels": {"quick": {"wd=1": {}, "wd=0": {"optim.weight_decay": 0.0}}},
                 "claims": [{"kind": "slower", "level": "wd=0", "than": "wd=1", "min_ratio": 1.25, "claim": "decay helps"}]}}


def test_a_small_study_runs_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(factors, "studies", lambda: TINY)
    cfg = Config(protocol="factors", task=TaskConfig(p=23, frac=0.8), model=ModelConfig(arch="mlp", d_model=32, d_mlp=128),
                 optim=OptimConfig(lr=1e-2), train=TrainConfig(steps=800, eval_every=20, threads=1), seeds=[0, 1],
                 params={"study": "tiny", "workers": 2})
    v = factors.run(cfg, tmp_path / "run").to_dict()
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.yaml", "meta.json", "metrics.csv", "figure.png", "verdict.json", "levels"} <= files
    for level in ("wd=1", "wd=0"):
        assert (tmp_path / "run" / "levels" / level / "config.yaml").exists()
        assert (tmp_path / "run" / "levels" / level / "seed1" / "checkpoint.pt").exists()
    m = v["measured"]
    assert m["study"] == "tiny" and list(m["levels"]) == ["wd=1", "wd=0"] and m["n_claims"] == 1
    assert set(m["levels"]["wd=0"]["per_seed"]) == {0, 1}
    assert m["levels"]["wd=1"]["seeds_grokked"] == 2 and m["levels"]["wd=0"]["seeds_grokked"] == 0
    assert m["levels"]["wd=0"]["t_test_bounds"] == [800, None]                # never grokked: bounded below by the budget
    assert v["status"] == m["claims"][0]["status"] == "holds"                 # grokked (~400 steps) vs not in 800
    json.dumps(v, allow_nan=False)                                       # strict JSON: no Infinity
    ck = {lv: tmp_path / "run" / "levels" / lv / "seed0" / "checkpoint.pt" for lv in ("wd=1", "wd=0")}
    mtime = {lv: p.stat().st_mtime_ns for lv, p in ck.items()}
    cfg.params["workers"] = 1                                            # resumed from the checkpoints, in-process
    again = factors.run(cfg, tmp_path / "run").to_dict()
    assert again["measured"]["levels"] == v["measured"]["levels"]
    assert all(p.stat().st_mtime_ns == mtime[lv] for lv, p in ck.items())  # nothing retrained
    changed = {"tiny": {**TINY["tiny"], "levels": {"quick": {"wd=1": {}, "wd=0": {"optim.weight_decay": 0.1}}}}}
    monkeypatch.setattr(factors, "studies", lambda: changed)
    factors.run(cfg, tmp_path / "run")
    assert ck["wd=1"].stat().st_mtime_ns == mtime["wd=1"] and ck["wd=0"].stat().st_mtime_ns != mtime["wd=0"]
