"""The phenomena check behind `circuits check`: every protocol's check variants (the `check:` list of
its YAML) run with one preset, each verdict compared with what the variant expects.

A variant is a mapping: config overrides (`arch: mlp`, or any `key: value`, passed as --set) plus
  expect    holds | fails | inconclusive (default holds). Anything but holds needs `why:`, naming
            the run that gave that status and the reason; a variant without it is a CircuitsError.
  claims    {claim text: expected status}, optional: when given it must name every claim of the
            verdict's `measured.claims` (circuits.detect.claims_from), and each is compared.
  name      a label (the variant is called PROTOCOL-NAME; without it PROTOCOL-VALUE-VALUE...).
  slow      true: run only with --slow (or when named by --only), but always listed.
  minutes   an estimate of its wall time on the 2-core CPU, used for ordering: with workers > 1
            the longest start first; `first: true` puts a variant at the front whatever its minutes.

The check is a gate in both directions: it exits 0 when every verdict (and every listed claim)
equals its expectation, 1 when any differs (an expected `fails` that now holds is as red as a
`holds` that now fails), 3 when a variant crashed. A crash is kept as an `error` row, its traceback
written to error.txt in the variant's directory; the other rows are still written to check.json
(rewritten after every row, so a killed check leaves what it had).

With workers > 1 the variants run side by side in worker processes (circuits.parallel.pmap: the
cores' torch threads shared out; a protocol's own pmap then runs in-process, no pool inside a pool).
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from circuits import api, registry
from circuits.errors import CircuitsError
from circuits.parallel import pmap
from circuits.store import write_json

EXPECTS = ("holds", "fails", "inconclusive")
KEYS = ("expect", "why", "claims", "name", "slow", "minutes", "first")     # the rest are overrides
EXIT_OK, EXIT_DIFFERS, EXIT_CRASHED = 0, 1, 3


@dataclass
class Variant:
    protocol: str
    claim: str
    name: str
    preset: str
    out: Path
    overrides: dict = field(default_factory=dict)
    expect: str = "holds"
    why: str = ""
    claims: dict | None = None          # claim text -> expected status
    slow: bool = False
    minutes: float | None = None
    first: bool = False
    device: str | None = None


# ---------------------------------------------------------------- the variants, from the YAML

def parse(protocol: str, claim: str, raw, preset: str, out: Path, device: str | None = None) -> Variant:
    """One entry of a protocol's `check:` list; a CircuitsError naming it when it is malformed."""
    where = f"protocols/{protocol}'s check variant {raw!r}"
    if not isinstance(raw, dict):
        raise CircuitsError(f"{where}: a variant is a mapping of overrides and expect/why/claims/name/slow/minutes/first")
    v = dict(raw)
    if "gate" in v:
        raise CircuitsError(f"{where}: `gate:` is gone: write `expect: fails` (or inconclusive) with `why:`")
    expect, why, claims = v.pop("expect", "holds"), str(v.pop("why", "") or "").strip(), v.pop("claims", None)
    label, slow, minutes, first = v.pop("name", None), v.pop("slow", False), v.pop("minutes", None), v.pop("first", False)
    name = "-".join([protocol, str(label)] if label else [protocol, *map(str, v.values())])
    where = f"check variant {name!r} (protocols/{protocol})"
    if expect not in EXPECTS:
        raise CircuitsError(f"{where}: expect must be one of {', '.join(EXPECTS)}, got {expect!r}")
    if expect != "holds" and not why:
        raise CircuitsError(f"{where}: expect: {expect} needs `why:` naming the run that gave it and the reason")
    if claims is not None:
        if not isinstance(claims, dict) or not claims:
            raise CircuitsError(f"{where}: claims must map each claim text to its expected status")
        bad = {c: s for c, s in claims.items() if s not in EXPECTS}
        if bad:
            raise CircuitsError(f"{where}: claim expectations must be one of {', '.join(EXPECTS)}, got {bad}")
        if any(s != "holds" for s in claims.values()) and not why:
            raise CircuitsError(f"{where}: a claim expected not to hold needs `why:`")
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes < 0):
        raise CircuitsError(f"{where}: minutes must be a number >= 0, got {minutes!r}")
    if not isinstance(slow, bool) or not isinstance(first, bool):
        raise CircuitsError(f"{where}: slow and first are true or false")
    return Variant(protocol, claim, name, preset, Path(out) / name, v, expect, why,
                   {str(c): s for c, s in claims.items()} if claims else None, slow, minutes, first, device)


def all_variants(preset: str, out, device: str | None = None) -> list[Variant]:
    """Every protocol's check variants, slow ones included, in registry and YAML order."""
    found = []
    for proto in registry.protocols().values():
        for raw in proto.check or [{}]:
            found.append(parse(proto.name, proto.claim, raw, preset, Path(out), device))
    names = [v.name for v in found]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CircuitsError(f"check variants with the same name: {', '.join(dup)} (give them `name:`)")
    return found


def select(found: list[Variant], only=(), slow: bool = False) -> tuple[list[Variant], list[Variant]]:
    """(to run, listed but not run). `only` takes protocol names and variant names; an unknown one is a
    CircuitsError listing the known names. A slow variant runs with slow=True or when named itself."""
    only = list(only or ())
    if only:
        protocols = list(dict.fromkeys(v.protocol for v in found))
        unknown = [x for x in only if x not in protocols and x not in {v.name for v in found}]
        if unknown:
            raise CircuitsError(f"--only: unknown {', '.join(map(repr, unknown))} (protocols: {', '.join(protocols)}; "
                                f"variants: {', '.join(v.name for v in found)})")
        found = [v for v in found if v.protocol in only or v.name in only]
    run = [v for v in found if not v.slow or slow or v.name in only]
    return run, [v for v in found if v not in run]


def variants(preset: str, out, only=(), device: str | None = None, slow: bool = False) -> list[Variant]:
    """The variants to run: every protocol's (those of `only`), the slow ones only with slow=True."""
    return select(all_variants(preset, out, device), only, slow)[0]


def order(found: list[Variant], workers: int = 1) -> list[Variant]:
    """The running order: `first: true` at the front; with workers > 1 the longest (minutes) next."""
    if workers > 1:
        return sorted(found, key=lambda v: (not v.first, -(v.minutes or 0.0)))
    return sorted(found, key=lambda v: not v.first)


# ---------------------------------------------------------------- running and comparing one variant

def summary(v: dict) -> str:
    """A verdict's first scalar numbers, for one line of output."""
    from circuits.runs import numbers
    return ", ".join(f"{k}={x:.4g}" if isinstance(x, float) else f"{k}={x}"
                     for k, x in numbers(v.get("measured", {}), 6).items())


def verdict_of(var: Variant) -> dict:
    """Run one variant fresh into its directory; its verdict (a dict)."""
    sets = [f"{k}={x}" for k, x in var.overrides.items() if k != "arch"]
    return api.run_protocol(var.protocol, var.preset, out=var.out, fresh=True, device=var.device,
                            arch=var.overrides.get("arch"), overrides=sets)


def compare(var: Variant, verdict: dict) -> tuple[bool, list[dict], list[str]]:
    """(everything as expected, per-claim rows, problems) for a verdict against the variant's expectations."""
    problems = [] if verdict["status"] == var.expect else [f"status {verdict['status']}, expected {var.expect}"]
    rows = []
    if var.claims is not None:
        got = {c["claim"]: c["status"] for c in verdict.get("measured", {}).get("claims") or []}
        for claim, want in var.claims.items():
            rows.append({"claim": claim, "expected": want, "got": got.get(claim, "missing"),
                         "ok": got.get(claim) == want})
            if not rows[-1]["ok"]:
                problems.append(f"claim {claim!r}: {rows[-1]['got']}, expected {want}")
        for claim in got:
            if claim not in var.claims:
                rows.append({"claim": claim, "expected": "unlisted", "got": got[claim], "ok": False})
                problems.append(f"claim {claim!r} ({got[claim]}) is not listed in the variant's claims:")
    return not problems, rows, problems


def base_row(var: Variant) -> dict:
    return {"check": var.name, "protocol": var.protocol, "claim": var.claim, "expected": var.expect,
            "why": var.why or None, "slow": var.slow, "minutes": var.minutes,
            "expected_claims": var.claims, "out": str(var.out), "run_dir": str(var.out)}


def run_variant(var: Variant) -> dict:
    """Run one variant and compare it: its row of check.json. A crash becomes an `error` row, its
    traceback in error.txt of the variant's directory."""
    t0 = time.perf_counter()
    try:
        verdict = verdict_of(var)
    except Exception as e:            # noqa: BLE001 - a crashing variant is a result, not the end of the check
        return error_row(var, e, traceback.format_exc(), time.perf_counter() - t0)
    ok, claims, problems = compare(var, verdict)
    return {**base_row(var), "status": verdict["status"], "ok": ok, "mark": "ok" if ok else "DIFFERS",
            "problems": problems, "claims": claims, "numbers": summary(verdict),
            "seconds": round(time.perf_counter() - t0, 1), "run_dir": verdict.get("run_dir", str(var.out))}


def error_row(var: Variant, e: BaseException, tb: str, seconds: float) -> dict:
    path = Path(var.out) / "error.txt"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(tb)
    except OSError:
        path = None
    return {**base_row(var), "status": "error", "ok": False, "mark": "ERROR", "problems": [f"crashed: {e!r}"],
            "claims": [], "numbers": f"{type(e).__name__}: {e}"[:200], "seconds": round(seconds, 1),
            "traceback": str(path) if path else tb}


def run_all(found: list[Variant], workers: int = 1, on_row=None) -> list[dict]:
    """Every variant's row, in the order given (they start in that order); on_row(row) as each finishes.
    run_variant turns a variant's own crash into an error row; should a worker process die instead
    (the pool breaks, circuits.parallel.pmap stops), every variant without a row gets an error row."""
    rows: dict[str, dict] = {}

    def take(row: dict) -> None:
        rows[row["out"]] = row
        if on_row:
            on_row(row)

    try:
        pmap(run_variant, found, workers, on_result=take)
    except Exception as e:            # noqa: BLE001 - a worker process died: keep what finished
        tb = "".join(traceback.format_exception(e))
        for var in found:
            if str(var.out) not in rows:
                take(error_row(var, e, tb, 0.0))
    return [rows[str(v.out)] for v in found]


def exit_code(rows: list[dict]) -> int:
    if any(r["status"] == "error" for r in rows):
        return EXIT_CRASHED
    return EXIT_OK if all(r["ok"] for r in rows) else EXIT_DIFFERS


# ---------------------------------------------------------------- the command

W = 38


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def describe(v: Variant) -> str:
    extra = [f"~{v.minutes:g} min" if v.minutes is not None else "", "slow" if v.slow else "", "first" if v.first else ""]
    return f"{v.name:<{W}} expect {v.expect:<13} {' '.join(x for x in extra if x)}"


def print_list(found: list[Variant], echo) -> None:
    echo(f"{len(found)} check variants (expectation, estimated minutes on the 2-core CPU):")
    for v in found:
        echo(describe(v))
        if v.overrides:
            echo(f"    overrides: {', '.join(f'{k}={x}' for k, x in v.overrides.items())}")
        for c, s in (v.claims or {}).items():
            echo(f"    claim {s:<13} {c}")
        if v.why:
            echo(f"    why: {v.why}")


def show_row(r: dict, echo) -> None:
    echo(f"{_cut(r['check'], W):<{W}} {r['expected']:<13} {r['status']:<13} {r['mark']:<8} "
         f"{_cut(r['numbers'], 64):<64} {r['seconds']:>7.1f}s")
    for c in r["claims"]:
        mark = "ok" if c["ok"] else "DIFFERS"
        echo(f"{'  · claim':<{W}} {c['expected']:<13} {c['got']:<13} {mark:<8} {c['claim']}")


def main(preset: str = "quick", out=Path("runs/check"), only=(), workers: int = 1, slow: bool = False,
         list_only: bool = False, device: str | None = None, echo=None) -> int:
    """`circuits check`: run, print the table and write out/check.json; the exit code (0 all as
    expected, 1 some verdict or claim differs, 3 a variant crashed). With list_only, print every
    variant (of `only`) with its expectation and minutes, and run nothing. User errors (a variant
    without why:, an unknown --only name, workers < 1) raise CircuitsError."""
    echo = echo or (lambda s: print(s, flush=True))
    if workers < 1:
        raise CircuitsError(f"--workers must be >= 1, got {workers}")
    out = Path(out)
    everything = all_variants(preset, out, device)
    run, not_run = select(everything, only, slow)
    if list_only:
        print_list(select(everything, only, slow=True)[0], echo)
        return EXIT_OK
    if not run:
        raise CircuitsError(f"--only {' '.join(only)}: every variant there is slow; add --slow or name one")
    declared, run = run, order(run, workers)          # run longest first; report in the YAML's order
    echo(f"{'check':<{W}} {'expected':<13} {'got':<13} {'mark':<8} {'numbers':<64} {'seconds':>8}")
    t0, rows = time.perf_counter(), []

    def report(final: bool = False) -> dict:
        done = [r for r in rows if r is not None]
        by_name = {r["check"]: r for r in done}
        ordered = [by_name[v.name] for v in declared if v.name in by_name]
        body = {"preset": preset, "workers": workers, "slow": slow, "finished": final,
                "exit_code": exit_code(ordered) if final else None,
                "passed": final and exit_code(ordered) == EXIT_OK,
                "seconds": round(time.perf_counter() - t0, 1), "checks": ordered,
                "not_run": [{**base_row(v), "reason": "slow (run with --slow)"} for v in not_run]}
        write_json(out / "check.json", body)
        return body

    def on_row(r: dict) -> None:
        rows.append(r)
        show_row(r, echo)
        report()

    run_all(run, workers, on_row=on_row)
    body = report(final=True)
    done, code = body["checks"], body["exit_code"]
    n_ok = sum(r["ok"] for r in done)
    echo(f"\n{n_ok}/{len(done)} as expected ({time.perf_counter() - t0:.0f} s, {workers} worker(s)); "
         f"details in {out / 'check.json'}")
    for r in done:
        if r["status"] == "error":
            echo(f"ERROR {r['check']}: {r['numbers']} (traceback: {r.get('traceback')})")
        elif not r["ok"]:
            echo(f"DIFFERS {r['check']}: {'; '.join(r['problems'])}")
    for r in done:
        if r["ok"] and r["expected"] != "holds":
            echo(f"as expected, {r['check']} {r['expected']}: {r['why']}")
    if not_run:
        echo("not run (slow; `--slow` runs them):")
        for v in not_run:
            echo("  " + describe(v))
    echo({EXIT_OK: "check passed", EXIT_DIFFERS: "check FAILED: a verdict differs from its expectation",
          EXIT_CRASHED: "check FAILED: a variant crashed"}[code])
    return code
