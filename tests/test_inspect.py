"""`circuits show`, `runs`, `compare` and `fields` on real (tiny) runs."""
import json

import pytest

from circuits import cli as cli_module
from circuits import config, fields


def run_cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        cli_module.main(list(args))
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny grokking runs (p = 11) that differ in weight decay."""
    from circuits import api
    root = tmp_path_factory.mktemp("runs")
    for name, wd in (("wd1", 1.0), ("wd0", 0.0)):
        api.run_protocol("grokking", "quick", out=root / name, p=11, arch="mlp",
                         overrides=["train.steps=60", "train.eval_every=20", f"optim.weight_decay={wd}", "seeds=[0,1]"])
    return root


def test_show_names_the_run_its_status_claims_numbers_and_figure(two_runs, capsys):
    code, out, err = run_cli(capsys, "show", str(two_runs / "wd1"), "--json")
    assert code == 0, err
    s = json.loads(out)
    verdict = json.loads((two_runs / "wd1" / "verdict.json").read_text())
    assert (s["protocol"], s["preset"], s["p"], s["seeds"]) == ("grokking", "quick", 11, [0, 1])
    assert s["status"] == verdict["status"] and s["claim"] == verdict["claim"]
    assert s["figure"].endswith("figure.png")
    assert s["numbers"] and all(verdict["measured"][k] == v for k, v in s["numbers"].items())
    assert s["weights"] == {"seeds": [0, 1], "networks": 0}
    assert s["live"] == ["seed0/metrics.live.csv", "seed1/metrics.live.csv"]
    code, text, _ = run_cli(capsys, "show", str(two_runs / "wd1"))
    assert code == 0 and "grokking (quick preset)" in text and f"status: {verdict['status']}" in text
    assert "weights: seed{0,1}/model.safetensors" in text and "live metrics: 2 file(s)" in text


def test_show_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    code, _, err = run_cli(capsys, "show", str(tmp_path))
    assert code == 2 and err.startswith("error: ") and "not a circuits run directory" in err and err.count("\n") == 1


def test_runs_lists_every_run_directory_below_a_folder(two_runs, capsys):
    code, out, err = run_cli(capsys, "runs", str(two_runs), "--json")
    assert code == 0, err
    found = json.loads(out)
    assert sorted(r["run_dir"].rsplit("/", 1)[-1] for r in found) == ["wd0", "wd1"]
    code, text, _ = run_cli(capsys, "runs", str(two_runs))
    assert text.splitlines()[0].split()[:3] == ["run", "directory", "protocol"] and len(text.splitlines()) == 3


def test_compare_overlays_the_runs_and_tabulates_their_numbers(two_runs, tmp_path, capsys):
    code, out, err = run_cli(capsys, "compare", str(two_runs / "wd1"), str(two_runs / "wd0"), "--out", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "compare.png").stat().st_size > 1000
    head = out.splitlines()[0].split()
    assert head == ["wd1", "wd0"] and "status" in out


def test_compare_needs_two_runs(two_runs, capsys, tmp_path):
    code, _, err = run_cli(capsys, "compare", str(two_runs / "wd1"), "--out", str(tmp_path))
    assert code == 2 and "at least two" in err


def test_every_config_field_has_a_type_a_default_and_a_meaning():
    rows = fields.rows()
    names = {r["field"] for r in rows}
    for section, cls in fields.SECTIONS.items():
        assert {f"{section}.{f}" for f in cls.__dataclass_fields__} <= names
    assert not [r["field"] for r in rows if not r["meaning"]]
    d_model = next(r for r in rows if r["field"] == "model.d_model")
    assert (d_model["type"], d_model["default"]) == ("int", config.ModelConfig().d_model)


def test_fields_of_a_protocol_list_its_params_and_criteria_with_rationale(capsys):
    code, out, _ = run_cli(capsys, "fields", "ungrokking")
    assert code == 0
    assert "params.subset_seeds" in out and "criteria.width_max" in out and "THEORY.md" in out
    code, _, err = run_cli(capsys, "fields", "optm")
    assert code == 2 and "did you mean optim?" in err


def test_every_protocol_param_has_a_meaning():
    """`circuits fields PROTOCOL` gives every params key a meaning (the module's PARAMS_DOC), and no
    meaning names a key the protocol does not have."""
    from circuits import registry
    for name in registry.protocols():
        module = registry.get(name).module
        defaults, doc = getattr(module, "DEFAULTS", None) or {}, getattr(module, "PARAMS_DOC", None) or {}
        assert set(doc) == set(defaults), name
        assert all(row["meaning"] for row in fields.protocol_rows(name) if row["field"].startswith("params.")), name
