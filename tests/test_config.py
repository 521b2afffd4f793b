import pytest

from circuits.config import Config, from_dict, parse_override, resolve
from circuits.errors import CircuitsError

PRESETS = {"quick": {"task": {"p": 47}, "model": {"d_model": 64},
                     "by_arch": {"mlp": {"model": {"d_model": 32}, "task": {"frac": 0.5}}}},
           "paper": {}}


def test_defaults_are_canonical():
    c = Config()
    assert (c.task.p, c.task.frac, c.task.layout) == (113, 0.3, "xy=")
    assert (c.model.n_layers, c.model.d_model, c.model.n_heads, c.model.d_head, c.model.d_mlp) == (1, 128, 4, 32, 512)
    assert (c.optim.name, c.optim.lr, c.optim.betas, c.optim.weight_decay, c.optim.warmup) == ("adamw", 1e-3, (0.9, 0.98), 1.0, 10)


def test_merge_order():
    c = resolve("g", PRESETS, "quick")
    assert (c.task.p, c.model.d_model, c.task.frac) == (47, 64, 0.3)
    c = resolve("g", PRESETS, "quick", arch="mlp")
    assert (c.model.arch, c.model.d_model, c.task.frac) == ("mlp", 32, 0.5)
    c = resolve("g", PRESETS, "quick", arch="mlp", frac=0.7, overrides=["model.d_model=8", "optim.betas=[0.8, 0.9]"])
    assert (c.task.frac, c.model.d_model, c.optim.betas) == (0.7, 8, (0.8, 0.9))


def test_set_arch_picks_by_arch_block():
    assert resolve("g", PRESETS, "quick", overrides=["model.arch=mlp"]).model.d_model == 32


def test_config_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("task: {p: 31}\nseeds: [3, 4]\n")
    c = resolve("g", PRESETS, "quick", config_file=str(f), seeds=None)
    assert c.task.p == 31 and c.seeds == [3, 4]


@pytest.mark.parametrize("bad,match", [
    (["model.foo=1"], "unknown config key 'model.foo'"),
    (["task.p=abc"], "bad value for task.p"),
    (["task.frac=0"], r"task.frac must be in \(0, 1\]"),
    (["optim.name=lion"], "optim.name"),
    (["nokey"], "key=value"),
    (["model.fast=3"], "bad value for model.fast"),
])
def test_bad_input_is_one_clear_error(bad, match):
    with pytest.raises(CircuitsError, match=match):
        resolve("g", PRESETS, "quick", overrides=bad)


def test_unknown_preset_and_arch():
    with pytest.raises(CircuitsError, match="no preset"):
        resolve("g", PRESETS, "huge")
    with pytest.raises(CircuitsError, match="--arch"):
        resolve("g", PRESETS, "quick", arch="cnn")


def test_parse_override_reads_yaml_values():
    assert parse_override("a.b=2") == {"a": {"b": 2}}
    assert resolve("g", PRESETS, "quick", overrides=["optim.lr=1e-3"]).optim.lr == 1e-3
    assert parse_override("x=true") == {"x": True}
    assert from_dict(Config, {"seeds": 2}).seeds == [2]
