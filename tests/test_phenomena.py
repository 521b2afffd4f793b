"""The phenomena check: `circuits check` trains real models with every protocol's quick preset and
judges them by the protocols' written criteria. It fails the day a predicted phenomenon stops
occurring. Slow (minutes on a 2-core CPU): select or skip it with `-m slow` / `-m "not slow"`."""
import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_circuits_check_quick(tmp_path):
    r = subprocess.run([sys.executable, "-m", "circuits", "check", "--preset", "quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=1500)
    print(r.stdout)
    report = json.loads((tmp_path / "check.json").read_text())
    failed = [(c["check"], c["status"], c["numbers"]) for c in report["checks"] if c["gate"] and c["status"] != "holds"]
    assert r.returncode == 0 and not failed, f"phenomena that did not hold: {failed}\n{r.stderr[-2000:]}"
    assert len(report["checks"]) >= 2
