"""figures/wd_conventions.py draws the two weight-decay conventions side by side from committed verdicts."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_draws_both_conventions_from_the_committed_p47_verdicts(tmp_path):
    spec = importlib.util.spec_from_file_location("wd_conventions", ROOT / "figures" / "wd_conventions.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fixed = ROOT / "figures" / "ungrokking_wd_fixed_budget_quick_mlp.verdict.json"
    equal = ROOT / "figures" / "ungrokking_wd_equal_decay_budget_quick_mlp.verdict.json"
    out = mod.main([str(fixed), str(equal), "--out", str(tmp_path / "w.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_refuses_verdicts_that_are_not_the_two_conventions(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("wd_conventions", ROOT / "figures" / "wd_conventions.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fixed = ROOT / "figures" / "ungrokking_wd_fixed_budget_quick_mlp.verdict.json"
    equal = ROOT / "figures" / "ungrokking_wd_equal_decay_budget_quick_mlp.verdict.json"
    for args in ([equal, fixed], [fixed, fixed], [equal, equal]):           # swapped, or one convention twice
        with pytest.raises(SystemExit) as e:
            mod.main([str(args[0]), str(args[1]), "--out", str(tmp_path / "w.png")])
        assert e.value.code == 2 and capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "w.png").exists()
