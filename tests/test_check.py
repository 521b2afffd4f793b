"""circuits check: variants parsed from the protocols' YAML, and the gate in both directions (the
expectation logic, with the protocol runs replaced by fakes), run one by one or side by side."""
import json
from types import SimpleNamespace

import pytest

from circuits import check
from circuits.errors import CircuitsError


# ---------------------------------------------------------------- the real YAMLs

def test_the_protocols_variants_parse(tmp_path):
    everything = {v.name: v for v in check.all_variants("quick", tmp_path)}
    semi = everything["semigrokking"]
    assert semi.expect == "fails" and semi.why                             # expected to fail, with the reason
    de = everything["data-efficiency-weight-decay"]                          # labelled with name:
    assert "name" not in de.overrides and de.overrides["params.select"][0] == "adam"
    assert set(de.claims) == {"adamw-wd-zero needs less data than adam", "adamw-wd-init needs less data than adam"}
    assert everything["grokking-transformer"].overrides == {"arch": "transformer"}
    assert everything["mixture-mlp-adamw"].expect == "fails" and everything["mixture-mlp-adamw"].why
    assert all(v.out == tmp_path / v.name for v in everything.values())
    assert all(v.expect == "holds" or v.why for v in everything.values())
    run, not_run = check.select(list(everything.values()))
    assert "factors-architectures" in everything and "factors-architectures" in {v.name for v in not_run}
    assert "ungrokking-transformer" in {v.name for v in run} and all(not v.slow for v in run)
    assert "factors-fraction" in {v.name for v in not_run}
    assert {v.protocol for v in check.variants("quick", tmp_path, only=["simulation"])} == {"simulation"}
    slow = {v.name for v in check.variants("quick", tmp_path, only=["factors"], slow=True)}
    assert "factors-architectures" in slow


# ---------------------------------------------------------------- the gate, with fake protocols

def _proto(name, variants):
    return SimpleNamespace(name=name, claim=f"{name}'s claim", check=variants)


@pytest.fixture
def fake(monkeypatch):
    """Protocols alpha and beta; each variant's verdict comes from `outcomes[name]`: a status, a
    (status, {claim: status}) pair, or an exception to raise. Unlisted variants hold."""
    protos = {"alpha": _proto("alpha", [{"name": "a1", "minutes": 1},
                                        {"name": "a2", "minutes": 5, "expect": "fails", "why": "failed in run X"}]),
              "beta": _proto("beta", [{"name": "b", "minutes": 2, "expect": "fails", "why": "c2 failed in run Y",
                                       "claims": {"c1": "holds", "c2": "fails"}},
                                      {"name": "slowpoke", "slow": True, "minutes": 9}])}
    monkeypatch.setattr(check.registry, "protocols", lambda: protos)
    outcomes = {"b": ("fails", {"c1": "holds", "c2": "fails"})}
    calls = []

    def verdict_of(var):
        calls.append(var.name)
        o = outcomes.get(var.name.split("-", 1)[1], "holds")
        if isinstance(o, BaseException):
            raise o
        status, claims = o if isinstance(o, tuple) else (o, None)
        measured = {"x": 1.5, **({"claims": [{"claim": c, "status": s} for c, s in claims.items()]} if claims else {})}
        return {"status": status, "measured": measured, "run_dir": str(var.out)}

    monkeypatch.setattr(check, "verdict_of", verdict_of)
    return SimpleNamespace(protos=protos, outcomes=outcomes, calls=calls)


def _main(tmp_path, **kw):
    lines = []
    code = check.main("quick", tmp_path, echo=lines.append, **kw)
    report = json.loads((tmp_path / "check.json").read_text()) if (tmp_path / "check.json").exists() else None
    return code, report, "\n".join(lines)


def test_all_as_expected_passes_and_lists_the_slow_ones_not_run(fake, tmp_path):
    fake.outcomes["a2"] = "fails"
    code, report, text = _main(tmp_path)
    assert code == 0 and report["passed"] and report["exit_code"] == 0
    assert [r["check"] for r in report["checks"]] == ["alpha-a1", "alpha-a2", "beta-b"]
    assert all(r["ok"] and r["mark"] == "ok" for r in report["checks"])
    assert [r["check"] for r in report["not_run"]] == ["beta-slowpoke"] and "beta-slowpoke" in text
    assert "beta-slowpoke" not in fake.calls
    assert "alpha-a2" in text and "failed in run X" in text                   # expected failure, with its why


@pytest.mark.parametrize("name,outcome", [("a1", "fails"), ("a1", "inconclusive"),    # expected holds, got other
                                          ("a2", "holds")])                          # expected fails, now holds
def test_a_verdict_that_differs_in_either_direction_fails_the_check(fake, tmp_path, name, outcome):
    fake.outcomes["a2"] = "fails"
    fake.outcomes[name] = outcome
    code, report, text = _main(tmp_path)
    assert code == 1 and not report["passed"]
    row = next(r for r in report["checks"] if r["check"] == f"alpha-{name}")
    assert row["mark"] == "DIFFERS" and not row["ok"] and row["status"] == outcome
    assert f"DIFFERS alpha-{name}" in text


def test_a_crash_is_an_error_row_with_its_traceback_and_the_other_rows_are_kept(fake, tmp_path):
    fake.outcomes["a2"] = "fails"
    fake.outcomes["a1"] = RuntimeError("boom")
    code, report, text = _main(tmp_path)
    assert code == 3 and report["exit_code"] == 3
    rows = {r["check"]: r for r in report["checks"]}
    assert set(rows) == {"alpha-a1", "alpha-a2", "beta-b"}
    assert rows["alpha-a1"]["status"] == "error" and rows["alpha-a1"]["mark"] == "ERROR"
    tb = tmp_path / "alpha-a1" / "error.txt"
    assert rows["alpha-a1"]["traceback"] == str(tb) and "RuntimeError: boom" in tb.read_text()
    assert rows["alpha-a2"]["ok"] and rows["beta-b"]["ok"]
    assert "ERROR alpha-a1" in text


def test_a_crash_outranks_a_difference(fake, tmp_path):
    fake.outcomes["a1"] = RuntimeError("boom")                       # and a2 holds against its expected fails
    assert _main(tmp_path)[0] == 3


@pytest.mark.parametrize("got,problem", [
    ({"c1": "holds", "c2": "holds"}, "claim 'c2': holds, expected fails"),           # a claim now holds
    ({"c1": "fails", "c2": "fails"}, "claim 'c1': fails, expected holds"),           # a claim now fails
    ({"c1": "holds"}, "claim 'c2': missing, expected fails"),                          # a claim went missing
    ({"c1": "holds", "c2": "fails", "c3": "holds"}, "claim 'c3' (holds) is not listed"),   # an unlisted claim
])
def test_every_listed_claim_is_compared(fake, tmp_path, got, problem):
    fake.outcomes["a2"] = "fails"
    fake.outcomes["b"] = ("fails", got)
    code, report, text = _main(tmp_path)
    row = next(r for r in report["checks"] if r["check"] == "beta-b")
    assert code == 1 and not row["ok"] and any(problem in p for p in row["problems"]), row["problems"]
    assert problem.split(":")[0] in text


def test_claims_as_expected_with_the_verdict_as_expected(fake, tmp_path):
    fake.outcomes["a2"] = "fails"
    code, report, _ = _main(tmp_path, only=["beta"])
    (row,) = report["checks"]
    assert code == 0 and row["claims"] == [{"claim": "c1", "expected": "holds", "got": "holds", "ok": True},
                                           {"claim": "c2", "expected": "fails", "got": "fails", "ok": True}]


@pytest.mark.parametrize("variant,match", [
    ({"name": "x", "expect": "fails"}, "needs `why:`"),
    ({"name": "x", "expect": "inconclusive", "why": ""}, "needs `why:`"),
    ({"name": "x", "claims": {"c": "fails"}}, "needs `why:`"),
    ({"name": "x", "expect": "maybe", "why": "w"}, "expect must be one of"),
    ({"name": "x", "gate": False, "why": "w"}, "`gate:` is gone"),
    ({"name": "x", "claims": {"c": "sometimes"}, "why": "w"}, "claim expectations"),
    ({"name": "x", "minutes": "ten"}, "minutes"),
])
def test_a_malformed_variant_is_a_user_error(fake, tmp_path, variant, match):
    fake.protos["alpha"].check.append(variant)
    with pytest.raises(CircuitsError, match=match):
        _main(tmp_path)
    assert fake.calls == []                                           # nothing ran


def test_only_takes_protocol_and_variant_names_and_rejects_typos(fake, tmp_path):
    with pytest.raises(CircuitsError, match=r"unknown 'alfa'.*protocols: alpha, beta.*variants: alpha-a1"):
        _main(tmp_path, only=["alfa"])
    assert fake.calls == []
    fake.outcomes["a2"] = "fails"
    assert _main(tmp_path, only=["alpha"])[0] == 0 and fake.calls == ["alpha-a1", "alpha-a2"]
    fake.calls.clear()
    assert _main(tmp_path, only=["beta-b"])[0] == 0 and fake.calls == ["beta-b"]
    fake.calls.clear()
    assert _main(tmp_path, only=["beta-slowpoke"])[0] == 0 and fake.calls == ["beta-slowpoke"]   # named: runs
    with pytest.raises(CircuitsError, match="workers"):
        _main(tmp_path, workers=0)


def test_list_prints_every_variant_and_runs_nothing(fake, tmp_path):
    code, report, text = _main(tmp_path, list_only=True)
    assert code == 0 and report is None and fake.calls == []
    for name in ("alpha-a1", "alpha-a2", "beta-b", "beta-slowpoke"):
        assert name in text
    assert "expect fails" in text and "~9 min" in text and "slow" in text and "claim fails" in text


def test_order_longest_first_with_workers_and_first_in_front(fake, tmp_path):
    fake.protos["alpha"].check.append({"name": "quick", "minutes": 0.1, "first": True})
    run, _ = check.select(check.all_variants("quick", tmp_path), slow=True)
    assert [v.name for v in check.order(run, 2)] == ["alpha-quick", "beta-slowpoke", "alpha-a2", "beta-b", "alpha-a1"]
    assert [v.name for v in check.order(run, 1)] == ["alpha-quick", "alpha-a1", "alpha-a2", "beta-b", "beta-slowpoke"]


def test_duplicate_names_are_an_error(fake, tmp_path):
    fake.protos["alpha"].check.append({"name": "a1"})
    with pytest.raises(CircuitsError, match="same name: alpha-a1"):
        check.all_variants("quick", tmp_path)


# ---------------------------------------------------------------- real runs, side by side

def test_side_by_side_gives_the_rows_in_order(tmp_path):
    a, = check.variants("quick", tmp_path / "a", only=["simulation"])
    b, = check.variants("quick", tmp_path / "b", only=["simulation"])
    seen = []
    rows = check.run_all([a, b], workers=2, on_row=seen.append)
    assert [r["run_dir"] for r in rows] == [str(a.out), str(b.out)] and len(seen) == 2
    assert rows[0]["status"] == rows[1]["status"] == "holds" and rows[0]["numbers"] == rows[1]["numbers"]
    assert rows[0]["ok"] and [c["ok"] for c in rows[0]["claims"]] == [True] * 5


def test_a_dead_worker_pool_keeps_the_finished_rows(fake, tmp_path, monkeypatch):
    """Should a worker process die (the pool breaks), the finished rows stay and the rest are errors."""
    from concurrent.futures.process import BrokenProcessPool

    def broken_pmap(fn, items, workers, on_result=None):
        on_result(fn(items[0]))
        raise BrokenProcessPool("a worker died")

    monkeypatch.setattr(check, "pmap", broken_pmap)
    fake.outcomes["a2"] = "fails"
    code, report, _ = _main(tmp_path, workers=2)
    rows = {r["check"]: r for r in report["checks"]}
    assert code == 3 and set(rows) == {"alpha-a1", "alpha-a2", "beta-b"}
    assert rows["alpha-a2"]["ok"] and rows["alpha-a2"]["status"] == "fails"        # ran first (longest, 5 min)
    assert rows["alpha-a1"]["status"] == rows["beta-b"]["status"] == "error"
