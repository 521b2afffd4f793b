"""A one-line progress bar on stderr: step, train and test accuracy, elapsed time, ETA.

On a terminal it redraws one line; otherwise (CI logs) it prints a line every 10% of the work.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time


class Bar:
    def __init__(self, label: str, stream=None, quiet: bool = False):
        self.label, self.stream = label, stream or sys.stderr
        self.quiet = quiet or os.environ.get("CIRCUITS_QUIET") == "1"   # set in sweep workers
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0, self.last_tenth = time.perf_counter(), -1

    def __call__(self, done: int, total: int, row: dict | None = None) -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * (total - done) if done else float("nan")
        width = 20
        fill = int(width * done / max(total, 1))
        parts = [f"{self.label} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}"]
        if row:
            parts += [f"train {row.get('train_acc', float('nan')):.3f}", f"test {row.get('test_acc', float('nan')):.3f}"]
        parts += [f"{elapsed:.0f}s", f"eta {eta:.0f}s" if done else ""]
        line = "  ".join(p for p in parts if p)
        if self.tty:
            self.stream.write("\r" + line[:150].ljust(150))
            self.stream.flush()
        else:
            tenth = int(10 * done / max(total, 1))
            if tenth > self.last_tenth:
                self.last_tenth = tenth
                self.stream.write(line + "\n")
                self.stream.flush()

    def close(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()


@contextlib.contextmanager
def silenced():
    """No per-run bars inside: a sweep's or protocol's own bar speaks for the runs it contains."""
    old = os.environ.get("CIRCUITS_QUIET")
    os.environ["CIRCUITS_QUIET"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CIRCUITS_QUIET", None)
        else:
            os.environ["CIRCUITS_QUIET"] = old
