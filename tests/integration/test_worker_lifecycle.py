"""A worker's life: graceful drain on SIGTERM, re-registration after a name-server restart, names."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from pyrocluster import Cluster
from pyrocluster.local import ready_address, start_nameserver, start_worker
from tests.conftest import run_cli, status_now, wait_for


def listed_workers(ns: str) -> list[str]:
    """The registered workers' names as ``status`` lists them (read in-process: polled)."""
    status = status_now(ns)
    return [] if status is None else [w["name"] for w in status["workers"]]


def test_sigterm_finishes_held_tasks_then_unregisters_and_exits_0(nameserver, worker_factory):
    (busy,) = worker_factory(1, "--concurrency", "2", "--services", "compute", "--name", "busy")
    with Cluster(nameserver) as cluster:
        futures = [cluster.submit("sleep", 1.5) for _ in range(2)]
        wait_for(lambda: cluster.in_flight() == 2, 10)
        time.sleep(0.3)  # the calls are on the worker now
        busy.signal(signal.SIGTERM)
        assert [f.result(timeout=30) for f in futures] == [1.5, 1.5]
        assert {f.worker for f in futures} == {"busy"}
        assert all(f.attempts == 1 for f in futures), "held tasks must finish, not be re-run"
    assert busy.proc.wait(timeout=30) == 0
    assert "busy" not in listed_workers(nameserver)


def test_a_group_sigterm_mid_job_exits_0_and_loses_nothing(nameserver, worker_factory):
    """A group SIGTERM (a unit without ``KillMode=mixed``, ``kill -- -PGID``) also ends the slot
    processes and the fork server: the worker still exits 0, and the calls its slots ran are re-run
    elsewhere."""
    (doomed,) = worker_factory(1, "--concurrency", "2", "--services", "compute", "--name", "doomed")
    worker_factory(1, "--concurrency", "2", "--services", "compute", "--name", "spare")
    with Cluster(nameserver) as cluster:
        futures = [cluster.submit("sleep", 0.02) for _ in range(200)]
        wait_for(lambda: sum(f.done() for f in futures) >= 20, 30)
        os.killpg(doomed.pid, signal.SIGTERM)
        assert [f.result(timeout=60) for f in futures] == [0.02] * 200
    assert doomed.proc.wait(timeout=30) == 0, "\n".join(list(doomed.output)[-20:])
    assert not [line for line in doomed.output if "uncaught" in line or "unexpected" in line]


def test_draining_worker_refuses_new_work_which_goes_elsewhere(nameserver, worker_factory):
    (draining,) = worker_factory(1, "--concurrency", "1", "--services", "compute", "--name", "draining")
    worker_factory(1, "--concurrency", "1", "--services", "compute", "--name", "other")
    with Cluster(nameserver) as cluster:
        blocker = cluster.submit("sleep", 2.0)
        wait_for(lambda: cluster.in_flight() >= 1, 10)
        draining.signal(signal.SIGTERM)
        time.sleep(0.3)
        later = [cluster.submit("add", i, i) for i in range(20)]
        assert [f.result(timeout=30) for f in later] == [2 * i for i in range(20)]
        assert blocker.result(timeout=30) == 2.0
    assert draining.proc.wait(timeout=30) == 0


@pytest.mark.slow
def test_workers_reregister_after_nameserver_restart(processes):
    ns_proc, address = start_nameserver()
    processes.add(ns_proc)
    port = address.rsplit(":", 1)[1]
    for name in ("a", "b"):
        processes.add(start_worker(address, ["--name", name, "--services", "compute", "--heartbeat", "1"]))
    assert sorted(listed_workers(address)) == ["a", "b"]
    ns_proc.stop()
    new_ns, _ = start_nameserver(port=int(port))
    processes.add(new_ns)
    restarted = time.monotonic()
    wait_for(lambda: sorted(listed_workers(address)) == ["a", "b"], 6)
    assert time.monotonic() - restarted <= 2 * 1 + 3  # two heartbeats, plus process start-up slack


def test_live_name_is_refused_and_stale_name_replaced(nameserver, worker_factory):
    (first,) = worker_factory(1, "--services", "compute", "--name", "dup")
    result = run_cli("worker", "--ns", nameserver, "--services", "compute", "--name", "dup")
    assert result.returncode == 2, result.stderr
    assert "a live worker with that name is already registered" in result.stderr
    first.signal(signal.SIGKILL)
    first.proc.wait(timeout=10)
    worker_factory(1, "--services", "compute", "--name", "dup")  # stale entry of a dead worker: replaced
    with Cluster(nameserver) as cluster:
        assert cluster.submit("add", 1, 1).result(timeout=30) == 2


def test_worker_whose_name_was_taken_while_frozen_steps_aside(nameserver, worker_factory):
    (frozen,) = worker_factory(1, "--services", "compute", "--name", "same", "--heartbeat", "0.5")
    frozen.signal(signal.SIGSTOP)
    (taker,) = worker_factory(1, "--services", "compute", "--name", "same", "--heartbeat", "0.5")
    frozen.signal(signal.SIGCONT)
    assert frozen.proc.wait(timeout=20) == 2
    assert "taken over by another live worker" in "\n".join(frozen.output)
    time.sleep(1.5)  # a few of the taker's heartbeats: its entries must stay its own
    assert listed_workers(nameserver) == ["same"]
    (w,) = json.loads(run_cli("status", "--ns", nameserver, "--json").stdout)["workers"]
    assert w["address"] == ready_address(taker.ready_line) and w["state"] == "ready"


def test_slot_processes_end_soon_after_their_worker_is_killed(nameserver, worker_factory):
    (worker,) = worker_factory(1, "--services", "compute", "--concurrency", "2")
    children = psutil.Process(worker.pid).children(recursive=True)
    assert len(children) >= 2
    with Cluster(nameserver) as cluster:
        busy = cluster.submit("sleep", 60)
        wait_for(lambda: cluster.in_flight() == 1, 10)
        worker.signal(signal.SIGKILL)
        worker.proc.wait(timeout=10)
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"slot processes outlived their worker: {[p.pid for p in alive]}"
        busy.cancel()
