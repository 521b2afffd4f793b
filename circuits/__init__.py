"""circuits: a testbed for the circuit-efficiency theory of grokking (Varma et al. 2023)."""
__version__ = "0.1.0"


def run(protocol: str, **kwargs):
    """Run a protocol from Python, e.g. `circuits.run("grokking", arch="mlp", preset="quick")`.
    Writes the same run directory as the CLI and returns the verdict (a dict)."""
    from circuits.api import run_protocol

    return run_protocol(protocol, **kwargs)


def load(run_dir):
    """What a run trained, back in Python: `circuits.load(run_dir)` -> a Run with .config, .data,
    .verdict, .metrics (a pandas DataFrame) and .model(seed) / .trajectory(seed) (circuits/loading.py)."""
    from circuits.loading import load as load_run

    return load_run(run_dir)
