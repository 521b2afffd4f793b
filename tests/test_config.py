import pytest

from circuits.config import Config, from_dict, parse_override, protocol_fields, read_value, resolve
from circuits.validate import check_like
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


@pytest.mark.parametrize("bad,match", [
    (["task.p=.inf"], r"bad value for task.p: inf \(expected an integer\)"),
    (["optim.lr=.inf"], r"bad value for optim.lr: inf \(expected a finite number\)"),
    (["optim.betas=[0.9, .nan]"], "bad value for optim.betas"),
    (["model=5"], "model is a section, not a value"),
    (["criteria=5"], "criteria is a section, not a value"),
    (["train.threads=-1"], "train.threads must be >= 0"),
    (["optim.momentum=-1"], "optim.momentum must be a finite number >= 0"),
    (["protocol=simulation"], "--set cannot change protocol"),
    (["preset=paper"], "--set cannot change preset"),
    (["optim.weight_deacy=1"], r"did you mean optim.weight_decay\?"),
    (["model.d_modle=8"], r"did you mean model.d_model\?"),
])
def test_more_bad_input_is_one_clear_error(bad, match):
    with pytest.raises(CircuitsError, match=match):
        resolve("g", PRESETS, "quick", overrides=bad)


def test_config_file_sections_and_protocol(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("protocol: g\npreset: quick\ntask: {p: 31}\n")       # a saved run's config.yaml: same protocol
    assert resolve("g", PRESETS, "quick", config_file=str(f)).task.p == 31
    with pytest.raises(CircuitsError, match="is for preset 'quick', not 'paper'"):
        resolve("g", PRESETS, "paper", config_file=str(f))
    f.write_text("model: 5\n")
    with pytest.raises(CircuitsError, match="model is a section"):
        resolve("g", PRESETS, "quick", config_file=str(f))
    f.write_bytes(b"task: {op: \xe9}\n")
    with pytest.raises(CircuitsError, match="is not UTF-8 text"):
        resolve("g", PRESETS, "quick", config_file=str(f))
    with pytest.raises(CircuitsError, match="is a directory"):
        resolve("g", PRESETS, "quick", config_file=str(tmp_path))


def test_scientific_numbers_are_numbers():
    assert read_value("1e-3") == 0.001 and read_value("2E5") == 200000.0 and read_value("-1.5e+2") == -150.0
    assert read_value("1e") == "1e" and read_value("abc") == "abc"
    assert resolve("g", PRESETS, "quick", overrides=["task.p=1.3e1"]).task.p == 13


def test_protocol_fields_unknown_key_suggests():
    msg = r"unknown config key 'params.stpes' \(did you mean params.steps\? known: steps, lr\)"
    with pytest.raises(CircuitsError, match=msg):
        protocol_fields({"stpes": 3}, {"steps": 1, "lr": 0.1}, "params")


@pytest.mark.parametrize("value,ref,ok", [
    (0.5, 0.99, True), (1, 0.99, True), ("abc", 0.99, False), (True, 0.99, False), (float("inf"), 0.99, False),
    (3, 1000, True), (2.5, 1000, False), (True, False, True), (1, False, False),
    ([0.3, 1], [0.2, 0.5], True), ("abc", [0.2, 0.5], False), ([0.3, "x"], [0.2, 0.5], False), (3, [0.2], False),
    ({"steps": 5}, {"steps": 10, "sizes": [0.1]}, True), ({"steps": "x"}, {"steps": 10}, False),
    ("sgd", "gd", True), (5, "gd", False), ("anything", None, True),
])
def test_check_like(value, ref, ok):
    if ok:
        check_like(value, ref, "params.x")
    else:
        with pytest.raises(CircuitsError, match="bad value for params.x"):
            check_like(value, ref, "params.x")


def test_p_alone_picks_the_preset_set_at_that_p():
    """`circuits dcrit --p 113` (no --preset) runs the paper's setting, model included, not the quick
    preset's shrunk model at p = 113; another p keeps the quick preset; --preset still wins."""
    from circuits import api
    cfg = api.resolve("ungrokking", None, arch="transformer", p=113)
    assert (cfg.preset, cfg.task.p, cfg.model.d_model, cfg.optim.lr) == ("paper", 113, 128, 1e-3)
    assert api.resolve("dcrit", None, p=113).preset == "paper"
    assert api.resolve("ungrokking", None, arch="transformer", p=59).preset == "quick"
    assert api.resolve("ungrokking", None, arch="transformer").preset == "quick"
    assert api.resolve("ungrokking", "quick", arch="transformer", p=113).model.d_model == 64


def test_quick_refuses_an_arch_it_has_no_setting_for_unless_the_model_is_sized():
    """`circuits run ungrokking --arch gru --preset quick` fell back to the 2 x 256 recurrent default
    (~40 min): every offered arch has a quick setting, or a one-line refusal naming what there is."""
    from circuits import api
    with pytest.raises(CircuitsError, match="dcrit's quick preset has no setting for --arch gru"):
        api.resolve("dcrit", "quick", arch="gru")
    assert api.resolve("dcrit", "quick", arch="gru", overrides=["model.hidden=64"]).model.hidden == 64
    assert api.resolve("dcrit", "paper", arch="gru").model.arch == "gru"      # paper: the user asked for hours
    for proto in ("grokking", "ungrokking", "factors"):
        for arch in ("rnn", "lstm", "gru", "birnn"):
            cfg = api.resolve(proto, "quick", arch=arch)
            assert cfg.model.hidden <= 128, (proto, arch)
