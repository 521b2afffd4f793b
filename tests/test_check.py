"""circuits check's variants: parsed from the protocols' YAML, run one by one or side by side."""
from circuits import check


def test_variants_read_gate_why_and_name(tmp_path):
    found = {v.name: v for v in check.variants("quick", tmp_path)}
    semi = [v for v in found.values() if v.protocol == "semigrokking"]
    assert semi and not semi[0].gate and semi[0].why                       # reported, not gating
    de = found["data-efficiency-weight-decay"]                               # labelled with name:
    assert de.gate and "name" not in de.overrides and de.overrides["params.select"][0] == "adam"
    assert found["grokking-transformer"].overrides == {"arch": "transformer"}
    assert all(v.out == tmp_path / v.name for v in found.values())
    assert {v.protocol for v in check.variants("quick", tmp_path, only=["simulation"])} == {"simulation"}
    slow = {v.name for v in check.variants("quick", tmp_path, only=["factors"], slow=True)}
    assert "factors-architectures" in slow and "factors-architectures" not in found   # only with --slow
    assert "factors-fraction" in found and all("slow" not in v.overrides for v in found.values())


def test_side_by_side_gives_the_rows_in_order(tmp_path):
    a, = check.variants("quick", tmp_path / "a", only=["simulation"])
    b, = check.variants("quick", tmp_path / "b", only=["simulation"])
    seen = []
    rows = check.run_all([a, b], workers=2, on_row=seen.append)
    assert [r["run_dir"] for r in rows] == [str(a.out), str(b.out)] and len(seen) == 2
    assert rows[0]["status"] == rows[1]["status"] == "holds" and rows[0]["numbers"] == rows[1]["numbers"]
