"""A worker stopping with a task still running past its drain: the task's slot process is ended at
once (its pipe is closed, nobody can read what it returns), and no new one is started for it."""

from __future__ import annotations

import signal
import time

import pytest

from pyrocluster import Cluster
from pyrocluster.local import start_worker
from tests.conftest import Processes, status_now, wait_for

DRAINED = "drain timed out"
"""The worker's log line when its drain ends with the task still running."""


def _busy(ns: str) -> int:
    shown = status_now(ns)
    return sum(w["busy"] for w in shown["workers"]) if shown else 0


@pytest.mark.timeout(60)
def test_a_worker_ends_a_task_its_drain_left_running_at_once(processes: Processes, nameserver: str) -> None:
    args = ["--name", "stopper", "--services", "compute", "--concurrency", "1", "--drain-timeout", "1"]
    worker = processes.add(start_worker(nameserver, args))
    with Cluster(nameserver, retries=0, direct=False) as cluster:  # a batch: the drain counts it
        future = cluster.submit("sleep", 30)
        wait_for(future.running, 20, what="the task to start")
        wait_for(lambda: _busy(nameserver) == 1, 20, what="the worker to run the task")
        worker.signal(signal.SIGTERM)
        wait_for(lambda: any(DRAINED in line for line in worker.output), 20, what="the drain to time out")
        drained = time.monotonic()
        worker.proc.wait(timeout=20)
        # It waited 2 s more for a replacement slot process it had just started (never to exit).
        assert time.monotonic() - drained < 1.9, "the worker waited for the task it gave up on"
