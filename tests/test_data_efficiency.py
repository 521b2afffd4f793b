"""data-efficiency: config selection and merging, the claim judge, and a tiny real run end to end."""
import pytest

from circuits import api
from circuits.errors import CircuitsError
from protocols.data_efficiency import Curve, better, config_for, judge, selected


def _curve(name, f50, ci=None):
    return Curve(name, [0.3, 0.5], [0.0, 1.0], [0, 0], None, f50, ci)


def test_better_reads_the_midpoints_and_their_intervals():
    assert better(_curve("a", 0.3, (0.28, 0.32)), _curve("b", 0.5, (0.45, 0.55)))[0] == "holds"
    assert better(_curve("a", 0.5, (0.45, 0.55)), _curve("b", 0.3, (0.28, 0.32)))[0] == "fails"
    status, why = better(_curve("a", 0.40, (0.35, 0.46)), _curve("b", 0.44, (0.42, 0.5)))
    assert status == "fails" and "overlap" in why
    assert better(_curve("a", 0.4), _curve("b", None))[0] == "holds"
    assert better(_curve("a", None), _curve("b", 0.4))[0] == "fails"
    assert better(_curve("a", None), _curve("b", None))[0] == "inconclusive"
    assert better(_curve("a", 0.3), _curve("b", 0.4)) == ("holds", "midpoints only (one seed: no intervals)")


def test_configs_merge_and_select():
    cfg = api.resolve("data-efficiency", "quick")
    sub = config_for(cfg, "x", {"optim": {"name": "adamw", "weight_decay": 1.0, "decay_to_init": True}})
    assert sub.optim.decay_to_init and sub.optim.lr == cfg.optim.lr and sub.task == cfg.task
    with pytest.raises(CircuitsError, match="params.configs.bad"):
        config_for(cfg, "bad", {"optim": {"nope": 1}})
    p = {"configs": {"a": {}, "b": {}}, "select": ["b"]}
    assert list(selected(p)) == ["b"]
    with pytest.raises(CircuitsError, match="unknown config"):
        selected({**p, "select": ["c"]})
    with pytest.raises(CircuitsError, match="names a config not in"):
        judge({"a": _curve("a", 0.3)}, [{"config": "a", "better_than": "zzz"}])


def test_tiny_run_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    v = api.run_protocol("data-efficiency", "quick", out=tmp_path / "de", overrides=[
        "task.p=13", "model.d_model=16", "model.d_mlp=32", "train.steps=150", "params.fracs=[0.3,0.6,0.9]",
        "params.select=[adam,adamw-wd-zero]", "params.claims=[{config: adamw-wd-zero, better_than: adam}]",
        "params.workers=1", "seeds=[0]"])
    m = v["measured"]
    assert set(m["configs"]) == {"adam", "adamw-wd-zero"} and len(m["claims"]) == 1
    assert len(m["configs"]["adam"]["points"]) == 3 and (tmp_path / "de" / "figure.png").exists()
    assert m["claims"] == [{"claim": "adamw-wd-zero needs less data than adam", "status": v["status"]}]
    # at p = 13 for 150 steps nothing generalises: neither midpoint exists, so the claim says nothing
    assert m["configs"]["adam"]["frac_50"] is None and m["configs"]["adamw-wd-zero"]["frac_50"] is None
    assert v["status"] == "inconclusive" and "neither generalises" in m["claim_details"][0]["why"]
