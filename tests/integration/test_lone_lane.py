"""A call submitted alone takes the short way (``coordinator/lonelane.py``) on real workers: it is
booked while out and counted in status, it waits behind calls already queued, a call that cannot
be sent fails at once, and a worker killed under it fails it over with the books cleared."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrocluster import Cluster, TaskFailed
from tests.conftest import TASKS_FILE, running_cluster, wait_for
from tests.helpers.rawworker import RawWorker

ONE_SLOT = ["--services", "compute", "--tasks", TASKS_FILE, "--concurrency", "1"]


@pytest.fixture(scope="module")
def ns() -> Iterator[str]:
    """A name server and one one-slot process worker ``solo``, shared by the module."""
    with running_cluster(["--name", "solo", *ONE_SLOT]) as address:
        yield address


def worker_done(cluster: Cluster, name: str) -> int:
    return next(int(w["done"]) for w in cluster.status()["workers"] if w["name"] == name)


def test_lone_calls_are_booked_while_out_and_counted_in_status(ns: str, tmp_path: Path) -> None:
    gate, started = tmp_path / "gate", tmp_path / "started"
    with Cluster(ns) as cluster:
        solo = RawWorker(ns, "solo")
        wait_for(lambda: solo.load().get("direct"), 15, what="the slot lent")
        done = worker_done(cluster, "solo")
        assert [cluster.submit("add", i, 1).result(10) for i in range(50)] == list(range(1, 51))
        assert solo.info()["direct"] > 0, "lone calls went straight to the slot"
        future = cluster.submit("hold", str(gate), 30, str(started))
        wait_for(started.exists, 10, what="the call running")
        assert cluster.in_flight() == 1  # booked on its worker while it runs
        assert [w["busy"] for w in cluster.status()["workers"]] == [1]
        gate.touch()
        assert future.result(20) == str(gate)
        assert (future.worker, future.attempts) == ("solo", 1)
        assert cluster.in_flight() == 0 and cluster.retried == 0
        assert wait_for(lambda: worker_done(cluster, "solo") >= done + 51, 10, what="the counts")


def test_a_lone_call_waits_behind_queued_calls_and_priorities_hold(ns: str, tmp_path: Path) -> None:
    gate, started, log = tmp_path / "gate", tmp_path / "started", tmp_path / "log"
    with Cluster(ns) as cluster:
        held = cluster.submit("hold", str(gate), 30, str(started))
        wait_for(started.exists, 10, what="the slot taken")
        low = cluster.submit("logged", "low", str(log))  # no room: it waits
        high = cluster.options(priority=5).submit("logged", "high", str(log))  # others wait: it does too
        assert not low.done() and not high.done() and cluster.in_flight() == 1
        gate.touch()
        assert (held.result(20), high.result(20), low.result(20)) == (str(gate), "high", "low")
    assert log.read_text().split() == ["high", "low"]


def test_a_lone_call_that_cannot_be_sent_fails_at_once_and_the_next_runs(ns: str) -> None:
    with Cluster(ns) as cluster:
        error = cluster.submit("add", object(), 1).exception(5)
        assert isinstance(error, TaskFailed) and error.type == "NotSendable", error
        assert cluster.in_flight() == 0
        assert cluster.submit("add", 2, 3).result(10) == 5


def test_a_worker_killed_under_a_lone_call_fails_it_over_and_clears_the_books(
    nameserver: str, worker_factory: Any, tmp_path: Path
) -> None:
    procs = {name: worker_factory(1, "--name", name, *ONE_SLOT)[0] for name in ("wa", "wb")}
    gate, started = tmp_path / "gate", tmp_path / "started"
    with Cluster(nameserver, probe_timeout=2, retries=1) as cluster:
        wait_for(lambda: cluster.capacity("compute") == 2, 15, what="both workers known")
        future = cluster.submit("hold", str(gate), 30, str(started))
        wait_for(started.exists, 10, what="the call running")
        busy = wait_for(lambda: [w for w in cluster.status()["workers"] if w["busy"]], 20, what="busy")
        procs[busy[0]["name"]].signal(signal.SIGKILL)
        wait_for(lambda: future.attempts == 2, 30, what="a second attempt")
        gate.touch()
        assert future.result(30) == str(gate)
        assert future.worker != busy[0]["name"] and cluster.retried == 1
        assert cluster.in_flight() == 0
        assert cluster.submit("add", 1, 1).result(10) == 2


TRIO = ["--name", "trio", "--services", "compute", "--tasks", TASKS_FILE, "--concurrency", "3"]


@contextlib.contextmanager
def two_long_calls_out(
    nameserver: str, worker_factory: Any, tmp_path: Path
) -> Iterator[tuple[Cluster, Path]]:
    """A cluster of one three-slot worker with two calls of ``hold``, a task known to be cheap by
    then, out and running throughout the block; ``opened``, a gate that lets a ``hold`` call end at
    once. After the block, the two end when their gate opens."""
    worker_factory(1, *TRIO)
    opened, gate, started = tmp_path / "open", tmp_path / "gate", tmp_path / "started"
    opened.touch()
    with Cluster(nameserver) as cluster:
        assert [cluster.submit("hold", str(opened)).result(10) for _ in range(20)] == [str(opened)] * 20
        long_calls = [cluster.submit("hold", str(gate), 30, str(started))]
        wait_for(started.exists, 10, what="the first long call running")
        long_calls.append(cluster.submit("hold", str(gate), 30))
        yield cluster, opened
        assert not any(f.done() for f in long_calls), "the long calls ran throughout"
        gate.touch()
        assert [f.result(20) for f in long_calls] == [str(gate)] * 2
        assert cluster.in_flight() == 0


def test_a_call_its_caller_blocks_on_is_not_held_behind_two_long_ones(
    nameserver: str, worker_factory: Any, tmp_path: Path
) -> None:
    # Calls of a task known to be cheap wait to ride in its next batch while two are out. A caller
    # blocked on one gets it sent alone to a free slot instead: here the two out never end until
    # the test says, so before, the third call waited for them.
    with two_long_calls_out(nameserver, worker_factory, tmp_path) as (cluster, opened):
        assert cluster.submit("hold", str(opened)).result(5) == str(opened)


def test_calls_nobody_waits_on_go_around_two_long_ones_once_no_reply_came_for_long(
    nameserver: str, worker_factory: Any, tmp_path: Path
) -> None:
    # The same two long calls held every call of the task submitted after them, however long they
    # ran: now only until REPLY_OVERDUE_S passes without a reply.
    with two_long_calls_out(nameserver, worker_factory, tmp_path) as (cluster, opened):
        later = [cluster.submit("hold", str(opened)) for _ in range(3)]
        wait_for(lambda: all(f.done() for f in later), 10, what="the later calls ending")
        assert [f.result(0) for f in later] == [str(opened)] * 3
