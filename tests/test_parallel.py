"""pmap: results in order, and no second pool inside a worker (a sweep of a protocol that itself
uses pmap must not put workers x workers processes on the cores); a failed job ends the map at
once; killing the main process (kill -9, Ctrl-C, SIGTERM) ends its workers and starts no more jobs."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from circuits.errors import CircuitsError
from circuits.parallel import pmap
from procs import alive as _alive, children as _children, kill_leftovers as _kill_leftovers, wait_until as _wait_until


def _square(x):
    return x * x


def _inner_pids(_):
    return os.getpid(), pmap(lambda_free_pid, [0, 1, 2])


def lambda_free_pid(_):
    return os.getpid()


def test_pmap_keeps_order():
    assert pmap(_square, range(6), workers=2) == [0, 1, 4, 9, 16, 25]


def test_no_nested_pool_inside_a_worker():
    for outer, inner in pmap(_inner_pids, [0, 1], workers=2):
        assert outer != os.getpid() and inner == [outer] * 3


# --- stopping: a failed job, a killed main process ---------------------------------------------

JOB_SECONDS = 20      # a job that is never meant to finish within a test


def _sleep(seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(0.05)


def _one_fails(item):
    """Job 1 fails soon after it starts; every other job runs for JOB_SECONDS."""
    folder, i = item
    Path(folder, f"started-{i}").write_text(str(os.getpid()))
    if i == 1:
        _sleep(0.3)
        raise ValueError(f"job {i} broke")
    _sleep(JOB_SECONDS)
    Path(folder, f"finished-{i}").write_text(str(os.getpid()))
    return i


def _user_error(x):
    if x == 1:
        raise CircuitsError("a bad value")
    return x


def _started(folder) -> dict[int, int]:
    """{job: pid of the worker that started it}, from the marker files the jobs write."""
    return {int(f.name.split("-")[1]): int(f.read_text() or 0) for f in Path(folder).glob("started-*")}


def test_a_failing_job_is_raised_at_once_and_the_rest_cancelled(tmp_path):
    items = [(str(tmp_path), i) for i in range(6)]
    with pytest.raises(ValueError, match="job 1 broke") as caught:
        pmap(_one_fails, items, workers=2)
    raised = time.time()
    started = _started(tmp_path)
    try:
        assert 1 in started
        # raised while the other jobs still had most of their JOB_SECONDS to run
        assert raised - Path(tmp_path, "started-1").stat().st_mtime < JOB_SECONDS / 2
        assert not list(tmp_path.glob("finished-*"))
        assert any("job 2/6" in note for note in getattr(caught.value, "__notes__", []))
        assert _wait_until(lambda: not any(_alive(p) for p in started.values()), 5), "a worker outlived the map"
        time.sleep(0.5)
        assert _started(tmp_path) == started, "jobs started after the failure"
    finally:
        _kill_leftovers(started.values())


def test_a_user_error_in_a_job_names_the_job():
    with pytest.raises(CircuitsError, match=r"job 2/3 \(1\): a bad value"):
        pmap(_user_error, [0, 1, 2], workers=1)


def test_pmap_restores_the_sigterm_handler():
    before = signal.getsignal(signal.SIGTERM)
    assert pmap(_square, [1, 2], workers=1) == [1, 4]
    assert signal.getsignal(signal.SIGTERM) is before


MAIN = f'''
import os, signal, sys, time
from pathlib import Path

from circuits.parallel import pmap


def job(item):
    folder, i = item
    Path(folder, f"started-{{i}}").write_text(str(os.getpid()))
    end = time.time() + {JOB_SECONDS}
    while time.time() < end:
        time.sleep(0.05)
    Path(folder, f"finished-{{i}}").write_text(str(os.getpid()))
    return i


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)   # ignored when started in the background
    print(pmap(job, [(sys.argv[1], i) for i in range(8)], workers=2))
'''


@pytest.mark.parametrize("sig, code", [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGINT, 130),
                                       (signal.SIGTERM, 143)], ids=["kill-9", "ctrl-c", "sigterm"])
def test_killing_the_main_process_ends_its_workers(tmp_path, sig, code):
    script, jobs = tmp_path / "main.py", tmp_path / "jobs"
    script.write_text(MAIN)
    jobs.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("CIRCUITS_IN_WORKER", None)
    log = open(tmp_path / "stderr.txt", "w+")      # a file, not a pipe: a surviving worker would hold a pipe open
    proc = subprocess.Popen([sys.executable, str(script), str(jobs)], stdout=subprocess.DEVNULL, stderr=log, env=env)
    children: set[int] = set()
    try:
        assert _wait_until(lambda: len(_started(jobs)) >= 2, 90), "the workers never started their jobs"
        started = _started(jobs)
        children = _children(proc.pid)
        assert set(started.values()) <= children      # the jobs run in children of the main process
        os.kill(proc.pid, sig)                        # the main process alone, not its group
        killed = time.monotonic()
        proc.wait(timeout=10)
        err = (tmp_path / "stderr.txt").read_text()
        assert proc.returncode == code, err
        assert _wait_until(lambda: not any(_alive(p) for p in children), 5 - (time.monotonic() - killed)), \
            f"processes outlived the main one: {[p for p in children if _alive(p)]}"
        time.sleep(0.5)
        assert _started(jobs) == started, "jobs started after the main process was killed"
        assert not list(jobs.glob("finished-*"))
        if sig != signal.SIGKILL:
            assert f"interrupted by {signal.Signals(sig).name}" in err
            assert "Traceback" not in err
    finally:   # leftovers first: a surviving worker holds the pipes open
        _kill_leftovers(children | _children(proc.pid))
        proc.kill()
        proc.wait(timeout=10)
        log.close()


def test_in_one_process_a_busy_item_waits_until_the_free_ones_are_done():
    order = []

    def record(x):
        order.append(x)
        return x * 10

    busy = {2, 3}
    assert pmap(record, [1, 2, 3, 4], workers=1, busy=lambda x: x in busy) == [10, 20, 30, 40]
    assert order == [1, 4, 2, 3]                    # busy ones last, in their order; results in the items' order
    order.clear()
    assert pmap(record, [2, 3], workers=1, busy=lambda x: True) == [20, 30] and order == [2, 3]


def _stamp(item):
    """Write when this item started (ns), then return it."""
    folder, x = item
    Path(folder, f"start-{x}").write_text(str(time.monotonic_ns()))
    _sleep(0.2)
    return x


def test_in_a_pool_a_busy_item_waits_until_the_free_ones_are_taken(tmp_path):
    """Two workers, items 0-1 busy (another process on them): the workers take 2 and 3 first, and no
    worker sits waiting on a busy item while a free one is left; results keep the items' order."""
    busy = {0, 1}
    items = [(str(tmp_path), x) for x in range(4)]
    assert pmap(_stamp, items, workers=2, busy=lambda it: it[1] in busy) == [0, 1, 2, 3]
    start = {x: int((tmp_path / f"start-{x}").read_text()) for x in range(4)}
    assert max(start[2], start[3]) < min(start[0], start[1])


def test_a_lock_held_by_another_process_is_seen_as_busy(tmp_path):
    from circuits.store import is_locked
    lock = tmp_path / ".x.lock"
    assert not is_locked(lock)
    holder = subprocess.Popen([sys.executable, "-c", f"from filelock import FileLock; import time\n"
                               f"l = FileLock({str(lock)!r}); l.acquire(); print('held', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert is_locked(lock)
    finally:
        holder.kill()
        holder.wait()
    assert not is_locked(lock)
