"""Run independent jobs side by side: worker processes on the CPU's cores, torch threads split
between them (one process runs them in order when workers == 1). Used by sweeps, by protocols
that train many small runs and by `circuits check`.

Stopping is prompt and leaves no process behind:
- a job that fails ends the whole map at once (the pending jobs are cancelled, the workers
  stopped) with the job named in the error;
- Ctrl-C (SIGINT) or SIGTERM to the main process cancels the pending jobs, stops the workers and
  raises `Interrupted`, a SystemExit with code 130 / 143: a script or the CLI exits with one line on
  stderr and that code. What was trained is kept: the training loop writes its own checkpoints, so
  re-running the same command resumes;
- workers die with the main process, even under `kill -9` (Linux: PR_SET_PDEATHSIG; everywhere:
  a thread in each worker that watches its parent's pid), and ignore SIGINT themselves (a Ctrl-C
  in a terminal reaches the whole process group: the main process decides what stops).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Callable, Iterable

from circuits.errors import CircuitsError

PR_SET_PDEATHSIG = 1          # linux/prctl.h: the signal a process gets when its parent dies
WATCH_PARENT_EVERY = 0.5      # seconds between a worker's checks that its parent is alive


class Interrupted(SystemExit):
    """A map stopped by a signal (SIGINT: Ctrl-C, or SIGTERM): pending jobs cancelled, workers
    stopped. A SystemExit whose code is the shell's code for the signal, 128 + its number (130,
    143), so an uncaught one ends a script or the CLI with that code; catch it to carry on."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(128 + self.signum)

    def __str__(self) -> str:
        return (f"interrupted by {signal.Signals(self.signum).name}: pending jobs cancelled, workers stopped; "
                "re-run the same command to resume")


def die_with_parent(parent_pid: int) -> None:
    """End this process (a worker) when its parent dies: SIGKILL from the kernel on Linux, and a
    watchdog thread everywhere (it also covers a parent that died before prctl was armed)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):   # no libc prctl: the watchdog alone
            pass
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch_parent, args=(parent_pid,), name="circuits-watch-parent", daemon=True).start()


def watch_parent(parent_pid: int) -> None:
    """Exit this process at once when its parent is gone (it was re-parented)."""
    while os.getppid() == parent_pid:
        time.sleep(WATCH_PARENT_EVERY)
    os._exit(1)


def init_worker(threads: int, parent_pid: int) -> None:
    """Set up a worker process: it dies with its parent, leaves Ctrl-C to it, runs quietly, one
    level deep, on `threads` torch threads."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    import torch

    os.environ["CIRCUITS_QUIET"] = "1"      # no per-run progress bars inside workers
    os.environ["CIRCUITS_IN_WORKER"] = "1"  # a pmap inside a worker (a sweep of a protocol that uses pmap) runs in-process
    torch.set_num_threads(threads)


def job_label(i: int, n: int, item) -> str:
    """'job 3/8 (task.frac=0.3,seed=0)': the item's `name` if it has one, else its repr, cut short."""
    name = getattr(item, "name", None)
    text = name if isinstance(name, str) else repr(item)
    return f"job {i + 1}/{n} ({text if len(text) <= 120 else text[:117] + '...'})"


def job_failed(err: BaseException, label: str) -> BaseException:
    """The exception to raise for a failed job, naming it: a user error keeps its one line (with the
    job in front), any other error is the job's own, with the job in a note under its traceback."""
    if isinstance(err, CircuitsError):
        new = CircuitsError(f"{label}: {err}")
        new.__cause__ = err
        return new
    if hasattr(err, "add_note"):
        err.add_note(f"raised by pmap {label}")
    return err


def report(stop: Interrupted) -> None:
    """Its one line on stderr, once (an outer, in-process pmap sees the same exception again)."""
    if getattr(stop, "reported", False):
        return
    stop.reported = True
    fresh_line = "\n" if sys.stderr.isatty() else ""   # after a progress bar's unfinished line
    print(f"{fresh_line}{stop}", file=sys.stderr, flush=True)


def _raise_interrupted(signum, _frame) -> None:
    raise Interrupted(signum)


@contextmanager
def stop_on_signals():
    """Within the block, SIGTERM and SIGINT (KeyboardInterrupt) raise `Interrupted`, with its one
    line on stderr. Only in the main thread of a main process: a worker's signals stay as they are."""
    if threading.current_thread() is not threading.main_thread() or os.environ.get("CIRCUITS_IN_WORKER"):
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    take_sigterm = previous not in (None, signal.SIG_IGN)   # an ignored SIGTERM, or one set from C, stays so
    if take_sigterm:
        signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    except KeyboardInterrupt:
        stop = Interrupted(signal.SIGINT)
        report(stop)
        raise stop from None
    except Interrupted as stop:
        report(stop)
        raise
    finally:
        if take_sigterm:
            signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_ignored():
    """SIGINT and SIGTERM ignored within the block (in the main thread of a main process; in a
    worker, or another thread, nothing changes)."""
    if threading.current_thread() is not threading.main_thread() or os.environ.get("CIRCUITS_IN_WORKER"):
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    kept = {sig: h for sig, h in previous.items() if h is not None}
    for sig in kept:
        signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel the pool's pending jobs and end its workers now (the running jobs are dropped)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 5
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1)
    pool.shutdown(wait=True)


def pmap(fn: Callable, items: Iterable, workers: int | None = None, on_done: Callable | None = None,
         on_result: Callable | None = None, busy: Callable | None = None) -> list:
    """[fn(item) for item in items], computed by `workers` processes (default: one per core, or one
    inside a worker of another pmap);
    `on_done(n_done, n_total)` and `on_result(result)` after each. fn and the items must be picklable
    (top-level functions). The first job to fail ends the map at once and its error is raised,
    naming the job; SIGINT / SIGTERM end it with `Interrupted` (see the module's docstring).
    `busy(item)` (True: another process is computing that item now, e.g. its checkpoint is locked)
    defers an item while others are free, instead of a worker waiting for it (the pool is fed one
    item per free worker, chosen when that worker frees up)."""
    items = list(items)
    if workers is None and os.environ.get("CIRCUITS_IN_WORKER"):
        workers = 1                          # the cores are taken by this worker's siblings already
    workers = max(1, min(workers or os.cpu_count() or 1, len(items) or 1))
    with stop_on_signals():
        if workers == 1:
            return _map_here(fn, items, on_done, on_result, busy)
        return _map_pool(fn, items, workers, on_done, on_result, busy)


def _map_here(fn: Callable, items: list, on_done: Callable | None, on_result: Callable | None,
              busy: Callable | None = None) -> list:
    """pmap in this process: in order, but an item `busy` says another process is on goes after
    the free ones (results keep the items' order)."""
    out: list = [None] * len(items)
    pending = list(range(len(items)))
    while pending:
        i = _next(items, pending, busy)
        try:
            out[i] = fn(items[i])
        except Exception as err:
            raise job_failed(err, job_label(i, len(items), items[i]))
        if on_result:
            on_result(out[i])
        if on_done:
            on_done(len(items) - len(pending), len(items))
    return out


def _next(items: list, pending: list[int], busy: Callable | None) -> int:
    """Take the next item's index off `pending`: the first that `busy` does not name (the first of
    all if every one is busy, or without `busy`)."""
    i = next((j for j in pending if not busy(items[j])), pending[0]) if busy else pending[0]
    pending.remove(i)
    return i


def _map_pool(fn: Callable, items: list, workers: int, on_done: Callable | None, on_result: Callable | None,
              busy: Callable | None = None) -> list:
    """pmap in `workers` worker processes, an item submitted as a worker frees up (so `busy` is asked
    then); results in the items' order."""
    out: list = [None] * len(items)
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=init_worker,
                               initargs=(threads, os.getpid()))
    try:
        waiting, futures, n_done = list(range(len(items))), {}, 0

        def feed():
            while waiting and len(futures) < workers:
                i = _next(items, waiting, busy)
                futures[pool.submit(fn, items[i])] = i

        feed()
        while futures:
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=futures.get):
                i = futures.pop(fut)
                err = fut.exception()
                if err is not None:
                    raise job_failed(err, job_label(i, len(items), items[i]))
                out[i] = fut.result()
                n_done += 1
                if on_result:
                    on_result(out[i])
                if on_done:
                    on_done(n_done, len(items))
            feed()
    except BaseException:
        with signals_ignored():              # a second Ctrl-C must not cut the clean-up short
            stop_pool(pool)
        raise
    pool.shutdown(wait=True)
    return out
