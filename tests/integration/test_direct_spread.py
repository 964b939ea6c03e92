"""Single submits in flight spread over every worker while lone calls go straight to the slots.

A direct reply carries no ``LOAD``; the coordinator counts its own calls in flight, so the calls
still go to the freest worker, each worker in turn.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import wait

from pyrocluster import Cluster
from pyrocluster.local import start_worker
from tests.conftest import TASKS_FILE, Processes, wait_for
from tests.helpers.rawworker import RawWorker

WORKERS = 6
IN_FLIGHT = 2 * WORKERS


def direct_calls(workers: list[RawWorker]) -> list[int]:
    """How many direct calls each worker ran."""
    return [int(w.info()["direct"]) for w in workers]


def test_single_submits_in_flight_reach_every_worker_on_the_direct_path(
    nameserver: str, processes: Processes
) -> None:
    names = [f"w{i}" for i in range(WORKERS)]
    args = ["--services", "compute", "--tasks", TASKS_FILE, "--concurrency", "1"]
    started = [processes.add(start_worker(nameserver, ["--name", n, *args], wait=False)) for n in names]
    for proc in started:
        proc.wait_ready()
    workers = [RawWorker(nameserver, n) for n in names]
    for w in workers:
        wait_for(lambda w=w: w.load().get("direct"), 20, what=f"{w.entry.name}'s slot lent")
    with Cluster(nameserver) as cluster:
        wait_for(lambda: cluster.capacity("compute") == WORKERS, 20, what="every worker known")
        # Lone calls that take real time (1 ms: cheap calls keep to a few workers), one at a
        # time, take turns over the workers: each reply tells the coordinator the worker's lent
        # slot, and a later call goes straight to it.
        wait_for(
            lambda: cluster.submit("sleep", 0.001).result(10) and min(direct_calls(workers)) > 0,
            30,
            interval_s=0,
            what="a direct call on every worker",
        )
        before = direct_calls(workers)
        futures = [cluster.submit("sleep", 0.3) for _ in range(IN_FLIGHT)]
        wait(futures, timeout=30)
        assert [f.result(0) for f in futures] == [0.3] * IN_FLIGHT
        share = Counter(f.worker for f in futures)
    assert set(share) == set(names), share  # every worker got a share
    ran_direct = sum(direct_calls(workers)) - sum(before)
    assert ran_direct >= WORKERS, (ran_direct, share)  # the direct path carried them
