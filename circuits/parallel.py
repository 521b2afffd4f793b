"""Run independent jobs side by side: worker processes on the CPU's cores, torch threads split
between them (one process runs them in order when workers == 1). Used by sweeps and by protocols
that train many small runs."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Callable, Iterable


def init_worker(threads: int) -> None:
    import torch

    os.environ["CIRCUITS_QUIET"] = "1"      # no per-run progress bars inside workers
    os.environ["CIRCUITS_IN_WORKER"] = "1"  # a pmap inside a worker (a sweep of a protocol that uses pmap) runs in-process
    torch.set_num_threads(threads)


def pmap(fn: Callable, items: Iterable, workers: int | None = None, on_done: Callable | None = None,
         on_result: Callable | None = None) -> list:
    """[fn(item) for item in items], computed by `workers` processes (default: one per core, or one
    inside a worker of another pmap);
    `on_done(n_done, n_total)` and `on_result(result)` after each. fn and the items must be picklable
    (top-level functions)."""
    items = list(items)
    if workers is None and os.environ.get("CIRCUITS_IN_WORKER"):
        workers = 1                          # the cores are taken by this worker's siblings already
    workers = max(1, min(workers or os.cpu_count() or 1, len(items) or 1))
    out: list = [None] * len(items)
    if workers == 1:
        for i, item in enumerate(items):
            out[i] = fn(item)
            if on_result:
                on_result(out[i])
            if on_done:
                on_done(i + 1, len(items))
        return out
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=init_worker,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for n, fut in enumerate(as_completed(futures), 1):
            out[futures[fut]] = fut.result()
            if on_result:
                on_result(out[futures[fut]])
            if on_done:
                on_done(n, len(items))
    return out
