"""The coordinator's thread count does not grow with workers or with batches in flight."""

from __future__ import annotations

import threading
from concurrent.futures import wait

import pytest

from pyrocluster.coordinator.cluster import Cluster
from tests.conftest import WorkerFactory, wait_for

WORKERS = 64
THREAD_BOUND = 12
"""dispatch, discovery, the wire loop, the prober, 4 + 2 pool threads, and a little room."""
WORKER_ARGS = ("--services", "compute", "--pool", "thread", "--concurrency", "1")


def coordinator_threads(before: set[int]) -> int:
    """Threads of this process that were not there before the coordinator was made."""
    return len({t.ident for t in threading.enumerate()} - before)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_64_workers_keep_the_coordinator_under_a_fixed_thread_bound(
    nameserver: str, worker_factory: WorkerFactory
) -> None:
    for _ in range(WORKERS // 16):  # in waves: 64 interpreters at once would trip the ready timeout
        worker_factory(16, *WORKER_ARGS)
    before = {t.ident for t in threading.enumerate()}
    peak = 0

    def sample() -> None:
        nonlocal peak
        peak = max(peak, coordinator_threads(before | {threading.get_ident()}))

    with Cluster(nameserver, probe_timeout=10) as cluster:
        wait_for(lambda: cluster.capacity("compute") >= WORKERS, 60, what=f"{WORKERS} workers known")
        # Work on every worker at once: a 2 s sleep per slot holds 64 batches in flight together.
        held = [cluster.submit("sleep", 2.0) for _ in range(WORKERS)]
        wait_for(lambda: cluster.in_flight() >= WORKERS, 30, interval_s=0.01, what="a batch on every worker")
        sample()
        wait(held, timeout=60)
        assert {f.worker for f in held} and all(f.result() == 2.0 for f in held)
        assert len({f.worker for f in held}) == WORKERS  # every slot was used at once
        # Many tiny calls, single and mapped.
        singles = [cluster.submit("add", i, i) for i in range(2000)]
        sample()
        assert list(cluster.starmap("add", [(i, i) for i in range(5000)])) == [2 * i for i in range(5000)]
        sample()
        assert [f.result() for f in singles] == [2 * i for i in range(2000)]
        sample()
        # status asks all 64 workers at once, on the coordinator's own wire: no thread per worker
        stop = threading.Event()
        watcher = threading.Thread(target=lambda: [sample() for _ in iter(lambda: stop.wait(0.001), True)])
        watcher.start()
        doc = cluster.status()
        stop.set()
        watcher.join(timeout=10)
        assert [w["state"] for w in doc["workers"]] == ["ready"] * WORKERS
    assert 0 < peak <= THREAD_BOUND, f"the coordinator ran {peak} threads with {WORKERS} workers"
