"""Criteria come from the claim: every criterion of every protocol's presets names, in its YAML's
`rationale:`, the statement it tests (a THEORY.md section, a paper figure, a seed report), and the
verdict carries that rationale."""
import pytest

from circuits import registry

PROTOCOLS = registry.protocols()


def criteria_keys(presets: dict) -> set[str]:
    keys = set()
    for preset in presets.values():
        preset = preset or {}
        keys |= set(preset.get("criteria") or {})
        for arch in (preset.get("by_arch") or {}).values():
            keys |= set((arch or {}).get("criteria") or {})
    return keys


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_every_criterion_has_a_rationale(name):
    proto = PROTOCOLS[name]
    keys = criteria_keys(proto.presets)
    assert keys, f"{name}: no criteria in its presets"
    rationale = proto.rationale or {}
    missing = sorted(k for k in keys if not str(rationale.get(k) or "").strip())
    assert not missing, f"protocols/{proto.module.__name__.split('.')[-1]}.yaml: no rationale for {missing}"
    assert all(isinstance(v, str) and "\n" not in v.strip() for v in rationale.values()), "one line each"


def test_the_verdict_carries_the_rationale(tmp_path):
    from circuits import api
    v = api.run_protocol("simulation", "quick", out=tmp_path / "r", overrides=[
        "params.steps=2000", "params.ungrok_steps=500", "params.points_per_decade=5"])
    assert set(v["rationale"]) >= set(v["criteria"]) and all(v["rationale"].values())
