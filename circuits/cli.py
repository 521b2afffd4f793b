"""The `circuits` command line (typer). Thin: parse, resolve the config, call a protocol, print."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from circuits import api, registry, sweep
from circuits import check as checks
from circuits.errors import CircuitsError
from circuits.store import write_json

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="A testbed for the circuit-efficiency theory of grokking (Varma et al. 2023).")

ARCH = typer.Option(None, "--arch", help="transformer | mlp | rnn | lstm | gru | birnn")
PRESET = typer.Option("quick", "--preset", help="quick (minutes on a 2-core CPU) | paper (the published setting)")
OUT = typer.Option(None, "--out", help="run directory [default: runs/PROTOCOL/PRESET-ARCH-HASH]")


@app.command("list")
def list_() -> None:
    """List protocols, their claims and presets."""
    for p in registry.protocols().values():
        typer.echo(f"{p.name:<18} [{', '.join(p.presets)}]  {p.claim}")


@app.command()
def run(protocol: str = typer.Argument(..., help="a protocol name (see `circuits list`)"),
        arch: Optional[str] = ARCH,
        p: Optional[int] = typer.Option(None, "--p", help="the modulus p"),
        frac: Optional[float] = typer.Option(None, "--frac", help="training fraction in (0, 1]"),
        preset: str = PRESET,
        config: Optional[Path] = typer.Option(None, "--config", help="a YAML file of config fields"),
        set_: List[str] = typer.Option([], "--set", help="override a field: --set model.d_model=64 (repeatable)"),
        seeds: Optional[int] = typer.Option(None, "--seeds", help="run seeds 0..N-1"),
        study: Optional[str] = typer.Option(None, "--study", help="the study of a protocol that has several "
                                            "(factors: architectures | fraction | operators | optimizers | regularizers)"),
        device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda"),
        out: Optional[Path] = OUT,
        fresh: bool = typer.Option(False, "--fresh", help="delete the run directory first instead of resuming it"),
        sweep_: List[str] = typer.Option([], "--sweep", help="sweep a field: --sweep task.frac=0.3,0.5 (repeatable; "
                                         "a grid with the seeds, one run directory per point, gathered in sweep.csv)"),
        workers: Optional[int] = typer.Option(None, "--workers", help="sweep worker processes [default: one per core]"),
        executor: str = typer.Option("local", "--executor", help="local | slurm (a job array through submitit)"),
        partition: Optional[str] = typer.Option(None, "--slurm-partition", help="Slurm partition"),
        time_min: int = typer.Option(60, "--slurm-time", help="Slurm time limit per point, minutes"),
        cpus: int = typer.Option(2, "--slurm-cpus", help="CPUs per Slurm task"),
        gpus: int = typer.Option(0, "--slurm-gpus", help="GPUs per Slurm task"),
        stacked: Optional[bool] = typer.Option(None, "--stack/--no-stack", help="train a sweep's points of one model "
                                               "shape as one stacked model [default: on with CUDA, off on CPU]")) -> None:
    """Run one protocol; writes config.yaml, meta.json, metrics.csv, figure.png/.pdf and verdict.json.
    With --sweep (or a preset's sweep), runs the grid and writes sweep.csv."""
    overrides = ([f"params.study={study}"] if study else []) + list(set_)
    cfg = api.resolve(protocol, preset, arch=arch, p=p, frac=frac, seeds=seeds, device=device,
                      config_file=str(config) if config else None, overrides=overrides)
    cfg.sweep = {**cfg.sweep, **sweep.parse_axes(sweep_)}
    run_dir = api.run_dir_for(cfg, out, fresh)
    if cfg.sweep or executor != "local":
        if workers is not None and workers < 1:
            raise CircuitsError(f"--workers must be >= 1, got {workers}")
        opts = sweep.SlurmOptions(partition=partition, time_min=time_min, cpus=cpus, gpus=gpus)
        path = sweep.run_sweep(cfg, run_dir, workers=workers, executor=executor, slurm=opts, stacked=stacked)
        typer.echo(f"sweep table: {path}")
        return
    _run_and_report(cfg, run_dir)


def _run_and_report(cfg, run_dir) -> dict:
    v = api.run_config(cfg, run_dir)
    typer.echo(f"{v['protocol']}: {v['status']}  ({checks.summary(v)})")
    typer.echo(f"run directory: {v['run_dir']}  (figure.png, verdict.json)")
    return v


def _floats(raw: str, what: str) -> list[float]:
    try:
        return [float(x) for x in raw.split(",")]
    except ValueError:
        raise CircuitsError(f"{what} expects numbers separated by commas, e.g. 0.3,1,3; got {raw!r}") from None


@app.command()
def dcrit(p: Optional[int] = typer.Option(None, "--p", help="the modulus p"),
          arch: Optional[str] = ARCH,
          method: str = typer.Option("all", "--method", help="sweep (from scratch) | ungrokking | efficiency "
                                     "(the norm crossing) | all (the three side by side)"),
          wd: Optional[str] = typer.Option(None, "--wd", help="weight decays, comma-separated (0.3,1,3): one "
                                           "estimate per weight decay, with equal decay budgets"),
          preset: str = PRESET,
          seeds: Optional[int] = typer.Option(None, "--seeds", help="run seeds 0..N-1"),
          set_: List[str] = typer.Option([], "--set", help="override a field: --set params.sweep.steps=6000 (repeatable)"),
          device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda"),
          out: Optional[Path] = OUT,
          fresh: bool = typer.Option(False, "--fresh", help="delete the run directory first instead of resuming it")) -> None:
    """Estimate D_crit, the training-set size where C_mem and C_gen are equally efficient, with an
    interval per method; writes figure.png and verdict.json (measured: D_crit per method)."""
    overrides = [f"params.method={method}"] + ([f"params.weight_decays={_floats(wd, '--wd')}"] if wd else []) + list(set_)
    cfg = api.resolve("dcrit", preset, arch=arch, p=p, seeds=seeds, device=device, overrides=overrides)
    run_dir = api.run_dir_for(cfg, out, fresh)
    v = _run_and_report(cfg, run_dir)
    m = v["measured"]
    for name, rows in m.get("methods", {}).items():
        for w, e in rows.items():
            ci = e.get("ci")
            est = f"{e['D_crit']:.0f} [{ci[0]:.0f}, {ci[1]:.0f}]" if e.get("D_crit") and ci else str(e.get("D_crit"))
            frac = f" = {e['frac']:.3f} p^2" if e.get("frac") else ""
            typer.echo(f"  {name:<11} wd {w:<5} D_crit {est}{frac}  ({e['status']})")
    if "hysteresis_ratio" in m:
        typer.echo(f"  ungrokking / sweep = {m['hysteresis_ratio']}; intervals overlap: {m['all_intervals_overlap']}; "
                   f"ungrokking <= efficiency <= sweep: {m['ordering_holds']}")


@app.command()
def check(preset: str = PRESET,
          out: Path = typer.Option(Path("runs/check"), "--out", help="where the check's runs and check.json go"),
          only: List[str] = typer.Option([], "--only", help="check only these protocols (repeatable)"),
          workers: int = typer.Option(1, "--workers", help="variants run side by side in this many processes, "
                                      "one torch thread each"),
          slow: bool = typer.Option(False, "--slow", help="also the variants marked slow (too long for CI)"),
          device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda")) -> None:
    """Run every protocol's check variants with a preset; exit 1 unless every gating check `holds`.
    A variant marked `gate: false` in its protocol's YAML (a claim our runs did not confirm) is run
    and reported with its status, but does not decide the exit code; `name:` labels a variant; one
    marked `slow: true` runs only with --slow."""
    if workers < 1:
        raise CircuitsError(f"--workers must be >= 1, got {workers}")
    found = checks.variants(preset, out, only, device, slow)
    typer.echo(f"{'check':<36} {'status':<13} {'seconds':>8}  key numbers")

    def show(r: dict) -> None:
        shown = r["status"] if r["gate"] else f"{r['status']}*"
        typer.echo(f"{r['check']:<36} {shown:<13} {r['seconds']:>7.1f}s  {r['numbers']}")

    t0 = time.perf_counter()
    rows = checks.run_all(found, workers, on_row=show)
    gating = [r for r in rows if r["gate"]]
    passed = all(r["status"] == "holds" for r in gating)
    write_json(out / "check.json", {"preset": preset, "passed": passed, "workers": workers,
                                    "seconds": round(time.perf_counter() - t0, 1), "checks": rows})
    typer.echo(f"\n{sum(r['status'] == 'holds' for r in gating)}/{len(gating)} gating checks hold "
               f"({time.perf_counter() - t0:.0f} s); details in {out / 'check.json'}")
    for r in rows:
        if not r["gate"]:
            typer.echo(f"* {r['check']}: reported, not gating: {r['why_not_gating']}")
    if not passed:
        raise typer.Exit(1)


def main() -> None:
    """Entry point: user errors end with one line on stderr and exit code 2, never a traceback."""
    try:  # typer >= 0.20 carries its own click
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exc

    try:
        rc = app(standalone_mode=False)
    except CircuitsError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click_exc.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # typer has printed the help already
            sys.exit(0)
        typer.echo(f"error: {e.format_message()}", err=True)
        sys.exit(2)
    except click_exc.ClickException as e:
        typer.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except (typer.Exit, click_exc.__dict__.get("Exit", typer.Exit)) as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)
