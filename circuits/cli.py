"""The `circuits` command line (typer). Thin: parse, resolve the config, call a protocol, print."""
from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import typer

from circuits import registry
from circuits.errors import did_you_mean
from circuits.errors import CircuitsError

# torch, the protocols and the run machinery are imported inside the commands that need them, so
# `circuits --help` and `circuits list` answer at once (benchmarks/cli_time.py).

EXIT_BAD_INPUT = 2     # a user error: one line on stderr, nothing started
EXIT_OS_ERROR = 3      # the file system failed during a run (disk full, permissions): one line naming the path
DCRIT_METHODS = ("sweep", "ungrokking", "efficiency", "all")

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="A testbed for the circuit-efficiency theory of grokking (Varma et al. 2023).\n\n"
                       "Exit codes: 0 done; 1 `check`: a gating check does not hold; 2 bad input (one line on "
                       "stderr, nothing started); 3 a file-system error during a run, e.g. a full disk (one line "
                       "naming the path; re-running resumes).")

ARCH = typer.Option(None, "--arch", help="transformer | mlp | rnn | lstm | gru | birnn")
PRESET = typer.Option(None, "--preset", help="quick (minutes on a 2-core CPU) | paper (the published setting) "
                      "[default: the preset set at --p if one is (--p 113: paper), else quick]")
CHECK_PRESET = typer.Option("quick", "--preset", help="the presets the check variants run")
OUT = typer.Option(None, "--out", help="run directory [default: runs/PROTOCOL/PRESET-ARCH-HASH]")
PLAN = typer.Option(False, "--plan", help="print the first line (what it would train, at most how long here, "
                    "counting only what the cache lacks) and stop: trains nothing, makes no run directory")


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
        preset: Optional[str] = PRESET,
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
                                               "shape as one stacked model [default: on with CUDA, off on CPU]"),
        log: Optional[str] = typer.Option(None, "--log", help="also log each evaluation to tensorboard | wandb "
                                          "(offline unless WANDB_MODE says otherwise); = --set train.log=..."),
        plan_only: bool = PLAN) -> None:
    """Run one protocol; writes config.yaml, meta.json, metrics.csv, figure.png/.pdf and verdict.json.
    With --sweep (or a preset's sweep), runs the grid and writes sweep.csv."""
    from circuits import api, sweep
    from circuits.validate import validate_run
    proto = known_protocol(protocol)
    overrides = ([f"params.study={study}"] if study else []) + ([f"train.log={log}"] if log else []) + list(set_)
    cfg = api.resolve(protocol, preset, arch=arch, p=p, frac=frac, seeds=seeds, device=device,
                      config_file=str(config) if config else None, overrides=overrides)
    cfg.sweep = {**cfg.sweep, **sweep.parse_axes(sweep_)}
    swept = bool(cfg.sweep) or executor != "local"
    if workers is not None and workers < 1:
        raise CircuitsError(f"--workers must be >= 1, got {workers}")
    if executor not in ("local", "slurm"):
        raise CircuitsError(f"--executor must be local or slurm, got {executor!r}")
    validate_run(cfg, proto)                         # all of it before a run directory is chosen or made
    check_overrides(proto.module, cfg, list(set_))
    if plan_only:
        typer.echo(sweep_line(cfg, out, workers, executor) if swept else first_line(cfg))
        return
    run_dir = checked_run_dir(cfg, out, fresh)
    with naming(run_dir):
        if swept:
            typer.echo(sweep_line(cfg, run_dir, workers, executor))
            opts = sweep.SlurmOptions(partition=partition, time_min=time_min, cpus=cpus, gpus=gpus)
            path = sweep.run_sweep(cfg, run_dir, workers=workers, executor=executor, slurm=opts, stacked=stacked)
            typer.echo(f"sweep table: {path}")
            return
        _run_and_report(cfg, run_dir)


def known_protocol(name: str) -> registry.Protocol:
    """The protocol of that name; an unknown name is one line, with the nearest known name."""
    found = registry.protocols()
    if name not in found:
        raise CircuitsError(f"unknown protocol {name!r} ({did_you_mean(name, found)}known: {', '.join(found)})")
    return found[name]


def check_out(path: Path, what: str = "--out") -> None:
    """Refuse a run directory that cannot be one before anything is written: an existing file, a
    path below a file, or a folder where nothing can be created (probed with a temp file that is
    removed at once)."""
    path = folder = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise CircuitsError(f"{what} {path} is an existing file, not a folder")
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir():
            raise CircuitsError(f"{what} {path}: {folder} is a file, not a folder")
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".circuits-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CircuitsError(f"{what} {path}: cannot create files in {folder} ({e.strerror or e})") from None


def checked_run_dir(cfg, out: Optional[Path], fresh: bool) -> Path:
    """The run directory of a validated cfg: `out` (or the default one) checked by `check_out`,
    then api.run_dir_for (which may empty it with --fresh)."""
    from circuits import api
    check_out(Path(out) if out else api.default_out(cfg), "--out" if out else "run directory")
    return api.run_dir_for(cfg, out, fresh)


@contextlib.contextmanager
def naming(run_dir):
    """An OSError without a file name (a failed write: ENOSPC) gets the run directory as its name."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(run_dir)) from e
        raise


def plan(cfg) -> str:
    """The first line of a run: which model, p, split, seeds and protocol sizes it is about to train."""
    from circuits.config import describe
    shape = describe(cfg.model)
    keys = ("sizes", "mem_sizes", "gen_sizes", "seeds", "grok_seeds", "subset_seeds", "coarse_seeds", "weight_decays",
            "method")
    pick = lambda d: ", ".join(f"{k} {v}" for k, v in d.items() if k in keys and (v or k not in ("coarse_seeds", "seeds")))  # noqa: E731
    methods = ("sweep", "ungrokking", "efficiency")
    if "method" in cfg.params:                                # dcrit: only the methods it will run
        from protocols.dcrit import methods_of
        methods = methods_of(cfg.params)
    parts = [pick(cfg.params)] + [f"{m}: {pick(cfg.params[m])}" for m in methods
                                  if isinstance(cfg.params.get(m), dict) and pick(cfg.params[m])]
    return (f"{cfg.protocol} ({cfg.preset} preset): {shape}, {cfg.optim.name} lr {cfg.optim.lr:g} wd "
            f"{cfg.optim.weight_decay:g}; p = {cfg.task.p}, frac {cfg.task.frac:g}, seeds {cfg.seeds}"
            + "".join(f"; {x}" for x in parts if x))


def first_line(cfg) -> str:
    """What a run is about to train and at most how long it takes here (circuits.estimate)."""
    from circuits import estimate
    return plan(cfg) + estimate.said(estimate.upper_bound(cfg, registry.get(cfg.protocol).module))


def sweep_line(cfg, out, workers: Optional[int], executor: str) -> str:
    """A sweep's first line: the base run, the axes, how many points (and how many not finished) and,
    run here, at most how long the unfinished ones take (circuits.estimate.sweep_bound)."""
    from circuits import api, estimate, sweep
    axes = sweep.axes_of(cfg)
    pts = sweep.grid(cfg, axes, Path(out) if out else api.default_out(cfg))
    todo = [pt.cfg for pt in pts if not api.is_done(pt.cfg, pt.run_dir)]
    line = (f"sweep of {plan(cfg)}; over {', '.join(f'{k} {v}' for k, v in axes.items())}: {len(pts)} points, "
            f"{len(todo)} to run")
    if executor != "local":
        return line + " (as a Slurm job array)"
    n = workers or os.cpu_count() or 1
    bound = estimate.sweep_bound(todo, registry.get(cfg.protocol).module, n) if todo else 0.0
    return line + f" on {n} worker{'s' * (n != 1)}" + estimate.said(bound)


def _run_and_report(cfg, run_dir) -> dict:
    from circuits import api
    from circuits import check as checks
    typer.echo(first_line(cfg))
    v = api.run_config(cfg, run_dir)
    typer.echo(f"{v['protocol']}: {v['status']}  ({checks.summary(v)})")
    typer.echo(f"run directory: {v['run_dir']}  (figure.png, verdict.json)")
    return v


def _floats(raw: str, what: str) -> list[float]:
    try:
        out = [float(x) for x in raw.split(",")]
    except ValueError:
        out = []
    if not out or not all(math.isfinite(x) for x in out):
        raise CircuitsError(f"{what} expects finite numbers separated by commas, e.g. 0.3,1,3; got {raw!r}")
    return out


@app.command()
def dcrit(p: Optional[int] = typer.Option(None, "--p", help="the modulus p"),
          arch: Optional[str] = ARCH,
          method: Optional[str] = typer.Option(None, "--method", help="sweep (from scratch) | ungrokking | efficiency "
                                               "(the norm crossing) | all (the three side by side) | a comma list "
                                               "(ungrokking,efficiency); default: the preset's (quick: all; paper, "
                                               "--p 113: ungrokking,efficiency, as runs from scratch there take hours)"),
          wd: Optional[str] = typer.Option(None, "--wd", help="weight decays, comma-separated (0.3,1,3): one "
                                           "estimate per weight decay, with equal decay budgets"),
          preset: Optional[str] = PRESET,
          seeds: Optional[int] = typer.Option(None, "--seeds", help="run seeds 0..N-1"),
          set_: List[str] = typer.Option([], "--set", help="override a field: --set params.sweep.steps=6000 (repeatable)"),
          device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda"),
          out: Optional[Path] = OUT,
          fresh: bool = typer.Option(False, "--fresh", help="delete the run directory first instead of resuming it"),
          plan_only: bool = PLAN) -> None:
    """Estimate D_crit, the training-set size where C_mem and C_gen are equally efficient, with an
    interval per method; writes figure.png and verdict.json (measured: D_crit per method)."""
    from circuits import api
    from circuits.validate import validate_run
    if method is not None:
        _check_methods(method)
    overrides = ([f"params.method={method}"] if method is not None else []) \
        + ([f"params.weight_decays={_floats(wd, '--wd')}"] if wd else []) + list(set_)
    cfg = api.resolve("dcrit", preset, arch=arch, p=p, seeds=seeds, device=device, overrides=overrides)
    validate_run(cfg)                                # all of it before a run directory is chosen or made
    check_overrides(registry.get("dcrit").module, cfg, list(set_))
    if plan_only:
        typer.echo(first_line(cfg))
        return
    run_dir = checked_run_dir(cfg, out, fresh)
    with naming(run_dir):
        v = _run_and_report(cfg, run_dir)
    m = v["measured"]
    for name, rows in m.get("methods", {}).items():
        for w, e in rows.items():
            ci = e.get("ci")
            est = f"{e['D_crit']:.0f} [{ci[0]:.0f}, {ci[1]:.0f}]" if e.get("D_crit") and ci else str(e.get("D_crit"))
            frac = f" = {e['frac']:.3f} p^2" if e.get("frac") else ""
            typer.echo(f"  {name:<11} wd {w:<5} D_crit {est}{frac}  ({e['status']})")
    if "ordering_holds" in m:
        chain = " <= ".join(x for x in ("ungrokking", "efficiency", "sweep") if x in m.get("methods", {}))
        ratio = f"ungrokking / sweep = {m['hysteresis_ratio']}; " if "hysteresis_ratio" in m else ""
        typer.echo(f"  {ratio}intervals overlap: {m['all_intervals_overlap']}; {chain}: {m['ordering_holds']}")


def check_overrides(module, cfg, overrides: list[str]) -> None:
    """A protocol's own check of the --set overrides against the resolved config (`check_overrides`
    in its module: dcrit refuses a setting for a method it will not run); one line, exit 2."""
    hook = getattr(module, "check_overrides", None)
    if hook is not None:
        hook(cfg, overrides)


def _check_methods(method: str) -> None:
    """--method: one of DCRIT_METHODS or a comma list of the three (one line, exit 2, else)."""
    from protocols.dcrit import methods_of
    try:
        methods_of({"method": method})
    except CircuitsError:
        names = [x.strip() for x in method.split(",")]
        bad = next((x for x in names if x not in DCRIT_METHODS), method)
        hint = did_you_mean(bad, DCRIT_METHODS).strip()
        raise CircuitsError(f"--method must be one of {', '.join(DCRIT_METHODS)} or a comma list of the methods "
                            f"(ungrokking,efficiency), got {method!r}" + (f" ({hint})" if hint else "")) from None


@app.command()
def check(preset: str = CHECK_PRESET,
          out: Path = typer.Option(Path("runs/check"), "--out", help="where the check's runs and check.json go"),
          only: List[str] = typer.Option([], "--only", help="a protocol or a check-variant name (repeatable)"),
          workers: int = typer.Option(1, "--workers", help="variants run side by side in this many processes, "
                                      "one torch thread each (the longest start first)"),
          slow: bool = typer.Option(False, "--slow", help="also the variants marked slow (too long for CI)"),
          list_: bool = typer.Option(False, "--list", help="print every variant with its expectation and "
                                     "minutes; run nothing"),
          device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda")) -> None:
    """Run every protocol's check variants and compare each verdict (and each listed claim) with its
    expectation (`expect:` / `claims:` in the protocol's YAML): exit 0 if all match, 1 if any differs
    in either direction (a `fails` that starts to hold turns it red too), 3 if a variant crashed
    (its traceback in VARIANT/error.txt)."""
    from circuits import check as checks
    if not list_:
        check_out(out)
    code = checks.main(preset, out, only, workers, slow, list_, device, echo=typer.echo)
    if code:
        raise typer.Exit(code)


@app.command()
def show(run_dir: Path = typer.Argument(..., help="a run directory"),
         as_json: bool = typer.Option(False, "--json", help="print the summary as JSON (for scripts)")) -> None:
    """What a run directory holds: protocol, model, p, seeds, status, its claims, key numbers, the figure."""
    import json

    from circuits import runs
    s = runs.show(run_dir)
    typer.echo(json.dumps(s, indent=1) if as_json else runs.show_text(s))


@app.command("runs")
def runs_(root: Path = typer.Argument(Path("runs"), help="a folder to search for run directories"),
          as_json: bool = typer.Option(False, "--json", help="print the list as JSON")) -> None:
    """A table of the run directories under a folder: protocol, preset, arch, p, status, started."""
    import json

    from circuits import runs
    found = runs.find_runs(root)
    if as_json:
        typer.echo(json.dumps(found, indent=1))
    elif not found:
        typer.echo(f"no run directories under {root}")
    else:
        typer.echo(runs.runs_table(found))


@app.command()
def compare(run_dirs: List[Path] = typer.Argument(..., help="two or more run directories"),
            out: Path = typer.Option(Path("runs/compare"), "--out", help="where compare.png/.pdf go")) -> None:
    """Overlay the runs' train and test accuracy against step in one figure; a table of their verdicts' numbers."""
    from circuits import runs
    check_out(out)
    figure, table = runs.compare(run_dirs, out)
    typer.echo(table)
    typer.echo(f"figure: {figure}")


@app.command()
def export(run_dir: Path = typer.Argument(..., help="a run directory of a transformer"),
           fmt: str = typer.Option("transformer-lens", "--format", help="transformer-lens (state dict with "
                                   "TransformerLens's names + a HookedTransformerConfig's fields)"),
           seed: Optional[int] = typer.Option(None, "--seed", help="which seed's network [default: the first]"),
           out: Optional[Path] = typer.Option(None, "--out", help="folder [default: RUN/export/FORMAT-seedN]")) -> None:
    """Export a run's trained network for another library (TransformerLens: logits equal to 1e-5)."""
    from circuits.export import export_run
    if out:
        check_out(out)
    folder = export_run(run_dir, fmt, seed, out)
    typer.echo(f"wrote {folder / 'state_dict.safetensors'} and {folder / 'config.json'}")


@app.command()
def fields(section: Optional[str] = typer.Argument(None, help="task | model | optim | train, or a protocol "
                                                   "name for its params and criteria [default: every config field]")) -> None:
    """Every config field with its type, default and meaning (set one with --set SECTION.FIELD=VALUE)."""
    from circuits import fields as config_fields
    typer.echo(config_fields.table(config_fields.rows(section)))


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: user errors end with one line on stderr and exit code 2 (EXIT_BAD_INPUT), never a
    traceback; a file-system error during a run (a full disk) with one line naming the path and exit
    code 3 (EXIT_OS_ERROR). argv: the arguments (default sys.argv[1:])."""
    try:  # typer >= 0.20 carries its own click
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exc

    try:
        rc = app(args=argv, prog_name="circuits", standalone_mode=False)
    except CircuitsError as e:
        typer.echo(f"error: {' '.join(str(e).split())}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except click_exc.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # typer has printed the help already
            sys.exit(0)
        typer.echo(f"error: {' '.join(e.format_message().split())}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as e:
        typer.echo(f"error: {e.filename or 'a file'}: {e.strerror or e}", err=True)
        sys.exit(EXIT_OS_ERROR)
    except click_exc.ClickException as e:
        typer.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except (typer.Exit, click_exc.__dict__.get("Exit", typer.Exit)) as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)
