"""Time the CLI's answers that should be instant: `circuits --help` and `circuits list`, against the
eager start they replaced (importing torch and every protocol, as the CLI did before), in the same run.

    python -m benchmarks.cli_time [--repeats 5]

Prints the median wall seconds of each (target: <= 0.5 s on the 2-core CPU) and the ratio to the
eager reference.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

EAGER = "import torch, importlib, pkgutil, protocols; [importlib.import_module('protocols.' + m.name) " \
        "for m in pkgutil.iter_modules(protocols.__path__)]"


def wall(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    ref = wall([sys.executable, "-c", EAGER], args.repeats)
    print(f"reference (import torch and every protocol): {ref:.2f} s")
    for what in (["--help"], ["list"]):
        t = wall([sys.executable, "-m", "circuits", *what], args.repeats)
        print(f"circuits {' '.join(what):<7} {t:.2f} s  ({t / ref:.2f} of the reference; target <= 0.5 s)")


if __name__ == "__main__":
    main()
