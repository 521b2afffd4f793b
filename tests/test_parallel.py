"""pmap: results in order, and no second pool inside a worker (a sweep of a protocol that itself
uses pmap must not put workers x workers processes on the cores)."""
import os

from circuits.parallel import pmap


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
