"""The phenomena check: `circuits check` trains real models with every protocol's quick preset, judges
them by the protocols' written criteria and compares every verdict (and every listed claim) with its
expectation, in both directions. It fails the day a predicted phenomenon stops occurring, and the day a
claim our runs saw fail starts to hold. Slow (minutes on a 2-core CPU): select or skip it with
`-m slow` / `-m "not slow"`. It trains into its own empty cache, never the user's ~/.cache."""
import json
import os
import subprocess
import sys

import pytest

from circuits import check


@pytest.mark.slow
def test_circuits_check_quick(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "CIRCUITS_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "circuits", "check", "--preset", "quick", "--workers", "2",
                        "--out", str(out)], capture_output=True, text=True, timeout=3000, env=env)
    print(r.stdout)
    tail = f"\n--- stderr (tail) ---\n{r.stderr[-3000:]}"
    assert (out / "check.json").exists(), f"no check.json (exit {r.returncode}){tail}"
    report = json.loads((out / "check.json").read_text())
    rows = {c["check"]: c for c in report["checks"]}
    expected = {v.name: v for v in check.variants("quick", out)}            # every variant but the slow ones
    assert set(rows) == set(expected), f"ran {sorted(rows)}, expected {sorted(expected)}{tail}"
    differ = [(n, x["expected"], x["status"], x["problems"], x["numbers"]) for n, x in rows.items() if not x["ok"]]
    assert r.returncode == 0 and not differ, f"exit {r.returncode}; not as expected: {differ}{tail}"
    for name, var in expected.items():
        assert rows[name]["status"] == var.expect
        assert {c["claim"]: c["got"] for c in rows[name]["claims"]} == (var.claims or {})
    assert {n["check"] for n in report["not_run"]} == {v.name for v in check.all_variants("quick", out) if v.slow}
