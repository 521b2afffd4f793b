"""Bad input to the CLI (issue #12, items 8 and 9): one line `error: ...` on stderr, exit code 2, no
traceback, and nothing started: no run directory chosen or made, no protocol run. In-process
(`cli.main(argv)`); a run that starts anyway fails the test at once instead of training."""
import errno
import os
from pathlib import Path

import pytest

from circuits import api, cli, registry, store, sweep
from circuits.config import resolve
from circuits.validate import validate_run


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A scratch working directory (default run directories land here) and a tripwire: choosing a
    run directory, running a protocol or a sweep raises instead."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))

    def started(*a, **k):
        raise AssertionError("a run was started")

    for mod, name in ((api, "run_dir_for"), (api, "run_config"), (sweep, "run_sweep")):
        monkeypatch.setattr(mod, name, started)
    return tmp_path


def fails(capsys, args, code=2) -> str:
    """Run the CLI; it must exit with `code` after one line `error: ...` on stderr. Returns the line."""
    with pytest.raises(SystemExit) as e:
        cli.main(list(args))
    err = capsys.readouterr().err
    assert e.value.code == code, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def write_files(tmp: Path) -> None:
    """Bad config files and a plain file where a run directory might go."""
    for name, content in {"bad.yaml": b"task: [1, 2\n", "latin1.yaml": b"task: {op: \xe9}\n",
                          "other.yaml": b"protocol: simulation\n", "a_file": b""}.items():
        (tmp / name).write_bytes(content)


BAD = [
    (["--set", "task.p=.inf"], "bad value for task.p: inf (expected an integer)"),
    (["--set", "optim.lr=.nan"], "bad value for optim.lr: nan (expected a finite number)"),
    (["--set", "model=5"], "model is a section, not a value"),
    (["--set", "criteria=5"], "criteria is a section, not a value"),
    (["--set", "params=5"], "params is a section, not a value"),
    (["--set", "sweep=5"], "sweep is a section, not a value"),
    (["--set", "criteria.test_acc=abc"], "bad value for criteria.test_acc: 'abc' (expected a finite number)"),
    (["--set", "criteria.train_acc=true"], "bad value for criteria.train_acc: True (expected a finite number)"),
    (["--set", "criteria.test_ac=0.9"], "unknown config key 'criteria.test_ac' (did you mean criteria.test_acc?"),
    (["--set", "optim.weight_deacy=1"], "unknown config key 'optim.weight_deacy' (did you mean optim.weight_decay?"),
    (["--set", "modle.d_model=8"], "unknown config key 'modle' (did you mean model?"),
    (["--set", "train.threads=-1"], "train.threads must be >= 0"),
    (["--set", "optim.name=sgd", "--set", "optim.momentum=-1"], "optim.momentum must be a finite number >= 0"),
    (["--set", "params.sizes=abc"], "unknown config key 'params.sizes' (protocol grokking takes no params)"),
    (["--set", "protocol=simulation"], "--set cannot change protocol"),
    (["--set", "preset=paper"], "--set cannot change preset; give it with --preset NAME"),
    (["--sweep", "seeds=3,4"], "--sweep seeds=... would be replaced by the run's seeds; use --seeds N"),
    (["--sweep", "task.frac=0.3,abc"], "bad value for task.frac: 'abc'"),
    (["--sweep", "task.p=11,100003"], "task p=100003, k=2 has 10,000,600,009 inputs, more than the 50,000,000"),
    (["--sweep", "task.frac=0.3", "--workers", "0"], "--workers must be >= 1, got 0"),
    (["--executor", "pbs"], "--executor must be local or slurm, got 'pbs'"),
    (["--p", "100003"], "task p=100003, k=2 has 10,000,600,009 inputs"),
    (["--set", "task.k=8"], "task p=47, k=8 has 23,811,286,661,761 inputs"),
    (["--preset", "quik"], "no preset 'quik' (did you mean quick?"),
    (["--config", "."], "is a directory, not a YAML file"),
    (["--config", "latin1.yaml"], "is not UTF-8 text"),
    (["--config", "bad.yaml"], "is not valid YAML"),
    (["--config", "other.yaml"], "is for protocol 'simulation', not 'grokking'"),
]


@pytest.mark.parametrize("args,msg", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_run_input_is_one_line_exit_2_and_starts_nothing(here, capsys, args, msg):
    write_files(here)
    before = set(os.listdir(here))
    err = fails(capsys, ["run", "grokking", *args, "--out", str(here / "r")])
    assert msg in err
    assert set(os.listdir(here)) == before                 # no run directory, nothing else either


@pytest.mark.parametrize("args,msg", [
    (["run", "semigrokking", "--set", "params.sizes=abc"],
     "bad value for params.sizes: 'abc' (expected a list of numbers"),
    (["run", "semigrokking", "--set", "params.sizes=[0.3, x]"], "expected a list of numbers"),
    (["run", "ungrokking", "--set", "params.steps=2.5"], "bad value for params.steps: 2.5 (expected an integer)"),
    (["run", "grokkin"], "unknown protocol 'grokkin' (did you mean grokking?"),
    (["dcrit", "--set", "criteria.min_ris=1"],
     "unknown config key 'criteria.min_ris' (did you mean criteria.min_rise?"),
    (["dcrit", "--wd", "inf"], "--wd expects finite numbers"),
    (["dcrit", "--method", "sweeps"],
     "--method must be one of sweep, ungrokking, efficiency, all or a comma list of the methods "
     "(ungrokking,efficiency), got 'sweeps' (did you mean sweep?)"),
    (["dcrit", "--method", "ungrokking,efficency"],
     "--method must be one of sweep, ungrokking, efficiency, all or a comma list of the methods "
     "(ungrokking,efficiency), got 'ungrokking,efficency' (did you mean efficiency?)"),
    (["dcrit", "--method", "sweep,sweep"],
     "--method must be one of sweep, ungrokking, efficiency, all or a comma list of the methods "
     "(ungrokking,efficiency), got 'sweep,sweep'"),
    (["dcrit", "--p", "100003"], "inputs, more than the 50,000,000"),
    # ranges (a protocol's own validate): a size that would have been clamped or trained on every pair
    (["run", "ungrokking", "--p", "113", "--set", "params.sizes=[5000]"],
     "params.sizes: size 5000 gives 5000 inputs; it must give 1 to 3830 (the grokked network's training split"),
    (["run", "ungrokking", "--set", "params.sizes=[0]"], "params.sizes: a size must be > 0"),
    (["run", "ungrokking", "--set", "params.sizes=[390.5]"], "a size above 1 is a count and must be whole, got 390.5"),
    (["run", "ungrokking", "--set", "params.weight_decays=[]"], "params.weight_decays must not be empty"),
    (["run", "ungrokking", "--set", "params.weight_decays=[1,-1]"], "params.weight_decays must be > 0, got -1"),
    (["run", "ungrokking", "--set", "params.subset_seeds=[0,0]"], "params.subset_seeds must not repeat a seed"),
    (["run", "ungrokking", "--set", "params.coarse_seeds=9"], "params.coarse_seeds must be in [0, 5]"),
    (["run", "ungrokking", "--set", "params.end_states=[0.1]"], "params.end_states must be [lo, hi]"),
    (["run", "efficiency", "--p", "113", "--set", "params.mem_sizes=[20000]"],
     "params.mem_sizes: size 20000 gives 20000 inputs; it must give 1 to 12768"),
    (["run", "efficiency", "--set", "params.target_logit=-3"], "params.target_logit must be > 0, got -3.0"),
    (["run", "semigrokking", "--set", "params.sizes=[1.0]"], "params.sizes: size 1.0 gives 2209 inputs; it must give 1 to 2208"),
    (["run", "semigrokking", "--set", "params.multipliers=[0]"], "params.multipliers must be > 0, got 0"),
    (["run", "data-efficiency", "--set", "params.fracs=[1.0]"], "params.fracs: size 1.0 gives 2209 inputs"),
    (["dcrit", "--p", "113", "--method", "all", "--set", "params.sweep.sizes=[99999]"],
     "params.sweep.sizes: size 99999 gives 99999 inputs"),
    (["dcrit", "--p", "113", "--set", "params.sweep.seeds=[1]"],      # the paper preset runs no sweep unless asked
     "params.sweep.seeds is set, but this run does not run the sweep method (params.method 'ungrokking,efficiency'): "
     "add --method all or a list with sweep in it"),
    (["run", "dcrit", "--set", "params.method=sweep", "--set", "params.efficiency.steps=10"],
     "params.efficiency.steps is set, but this run does not run the efficiency method"),
    (["dcrit", "--p", "113", "--set", "params.ungrokking.sizes=[5000]"], "params.ungrokking.sizes: size 5000 gives 5000"),
    (["dcrit", "--set", "params.efficiency.gen_sizes=[0]"], "params.efficiency.gen_sizes: a size must be > 0"),
])
def test_bad_params_and_dcrit_input(here, capsys, args, msg):
    assert msg in fails(capsys, [*args, "--out", str(here / "r")])
    assert not (here / "r").exists()


def test_nulls_are_taken_where_the_protocol_default_is_none(here):
    proto = registry.get("semigrokking")
    cfg = resolve(proto.name, proto.presets, "quick", overrides=["params.sizes=null", "params.D_crit=800"])
    validate_run(cfg, proto)


@pytest.mark.parametrize("out,msg", [("a_file", "is an existing file, not a folder"),
                                     ("a_file/sub", "a_file is a file, not a folder")])
def test_out_that_cannot_be_a_run_directory(here, capsys, out, msg):
    write_files(here)
    assert msg in fails(capsys, ["run", "grokking", "--out", str(here / out)])
    assert msg in fails(capsys, ["dcrit", "--out", str(here / out)])


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")
def test_out_where_nothing_can_be_written(here, capsys):
    err = fails(capsys, ["run", "grokking", "--out", "/proc/forbidden"])
    assert "--out /proc/forbidden: cannot create files in /proc" in err


def test_too_big_for_memory_is_refused(here, capsys, monkeypatch):
    monkeypatch.setenv("CIRCUITS_MEMORY_LIMIT_GB", "1")
    err = fails(capsys, ["run", "grokking", "--p", "1009", "--out", str(here / "r")])
    assert "task p=1009, k=2 with this model needs about" in err
    assert "more than the 1.0 GB allowed (CIRCUITS_MEMORY_LIMIT_GB=1)" in err
    monkeypatch.setenv("CIRCUITS_MEMORY_LIMIT_GB", "lots")
    assert "CIRCUITS_MEMORY_LIMIT_GB must be a number of GB, got 'lots'" in fails(capsys, ["run", "grokking"])


def test_full_disk_is_one_line_naming_the_path_exit_3(tmp_path, capsys, monkeypatch):
    """A write that fails with ENOSPC (no file name on the error) ends the run with one line naming
    the run directory and exit code 3 (a file-system error, not bad input)."""
    monkeypatch.chdir(tmp_path)

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store, "atomic_write_bytes", full)
    out = tmp_path / "r"
    err = fails(capsys, ["run", "grokking", "--p", "11", "--seeds", "1", "--set", "train.steps=5",
                         "--out", str(out)], code=cli.EXIT_OS_ERROR)
    assert err == f"error: {out}: No space left on device\n"


def test_every_preset_and_check_variant_passes_validation(monkeypatch):
    """No false alarms: every protocol's presets (with each by_arch block) and `circuits check`
    variants validate."""
    monkeypatch.setenv("CIRCUITS_MEMORY_LIMIT_GB", "1000")
    for proto in registry.protocols().values():
        for preset, spec in proto.presets.items():
            for arch in [None, *((spec or {}).get("by_arch") or {})]:
                validate_run(resolve(proto.name, proto.presets, preset, arch=arch), proto)
        for variant in proto.check:
            overrides = [f"{k}={v}" for k, v in variant.items() if "." in k]
            if "quick" in proto.presets:
                validate_run(resolve(proto.name, proto.presets, "quick", arch=variant.get("arch"),
                                     overrides=overrides), proto)


def test_a_protocols_own_validate_runs_for_every_sweep_point():
    """validate_run calls a protocol module's `validate(cfg)` (if it has one) for every grid point."""
    import dataclasses
    import types

    seen = []

    def own(cfg):
        seen.append(cfg.task.frac)
        if cfg.task.frac > 0.6:
            raise ValueError("too much data")          # a CircuitsError in a real protocol

    proto = registry.get("grokking")
    proto = dataclasses.replace(proto, loaded=types.SimpleNamespace(validate=own))
    cfg = resolve(proto.name, proto.presets, "quick")
    cfg.sweep = {"task.frac": [0.3, 0.5]}
    validate_run(cfg, proto)
    assert seen == [0.3, 0.5]
    cfg.sweep = {"task.frac": [0.3, 0.7]}
    with pytest.raises(ValueError, match="too much data"):
        validate_run(cfg, proto)


@pytest.mark.parametrize("order", [("quick", "paper"), ("paper", "quick")])
def test_a_params_kind_is_the_widest_any_preset_gives(order):
    """A list of numbers in one preset and a list with a null in another (end_states [0.05, 0.99] and
    [0.1, null]) both validate, whichever preset comes first; a string is still refused."""
    import types

    from circuits.errors import CircuitsError
    from circuits.validate import check_protocol_fields, known_fields

    given = {"quick": {"by_arch": {"mlp": {"params": {"end_states": [0.05, 0.99]}}}},
             "paper": {"params": {"end_states": [0.1, None]}}}
    proto = types.SimpleNamespace(name="x", module=types.SimpleNamespace(DEFAULTS={"end_states": None}),
                                  presets={name: given[name] for name in order})
    assert known_fields(proto, "params")["end_states"][1] is True                 # nullable
    for ok in ([0.1, None], [0.05, 0.99], None):
        check_protocol_fields(types.SimpleNamespace(params={"end_states": ok}), proto, "params")
    with pytest.raises(CircuitsError, match="bad value for params.end_states"):
        check_protocol_fields(types.SimpleNamespace(params={"end_states": "low"}), proto, "params")
