"""A lone call's reply awaited awake (``coordinator/wire/replyspin.py``) on a real worker: one call
at a time spins and is caught, a call out beside another sleeps, a task slower than the window
backs the spinning off, and a zero window turns it off; every result is right throughout.

Beside a long call in one slot, lone calls go straight to the worker's other slot: the connect to
the busy slot (answered only after its call) must not hold back the one to the free slot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrocluster import Cluster
from pyrocluster.coordinator.wire.replyspin import ReplySpin
from tests.conftest import TASKS_FILE, running_cluster, wait_for
from tests.helpers.rawworker import RawWorker

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def ns() -> Iterator[str]:
    """A name server and one two-slot process worker ``duo``, shared by the module."""
    args = ["--name", "duo", "--services", "compute", "--tasks", TASKS_FILE, "--concurrency", "2"]
    with running_cluster(args) as address:
        yield address


def awake(cluster: Cluster) -> ReplySpin:
    return cluster._dispatcher._awake


def spun(cluster: Cluster) -> tuple[int, int]:
    policy = awake(cluster)
    return policy.caught_replies, policy.missed_replies


def caught_one(cluster: Cluster) -> None:
    """Lone calls one at a time until a reply is caught spinning (the direct path is up). The
    last call's reply is the one caught, so the next call spins: no run of calls that sleep at
    once, which misses after the catch would start, is left over (under load it was, and a test
    that needs the next call to spin saw none spin)."""
    before = awake(cluster).caught_replies
    n = 0

    def some() -> bool:
        nonlocal n
        for _ in range(50):  # back to back: a reply after an idle pause comes slower
            n += 1
            assert cluster.submit("add", n, 1).result(10) == n + 1
            if awake(cluster).caught_replies > before:
                return True
        return False

    wait_for(some, 30, what="a lone call's reply caught spinning")


def test_lone_calls_one_at_a_time_are_awaited_awake(ns: str) -> None:
    with Cluster(ns) as cluster:
        caught_one(cluster)
        before = spun(cluster)
        assert [cluster.submit("add", i, i).result(10) for i in range(40)] == [2 * i for i in range(40)]
        assert sum(spun(cluster)) > sum(before), "one call at a time: its thread spins"
        assert cluster.in_flight() == 0


def test_beside_a_long_call_lone_calls_go_straight_to_the_free_slot_and_sleep(
    ns: str, tmp_path: Path
) -> None:
    gate, started = tmp_path / "gate", tmp_path / "started"
    duo = RawWorker(ns, "duo")
    with Cluster(ns) as cluster:
        caught_one(cluster)
        held = cluster.submit("hold", str(gate), 30, str(started))
        wait_for(started.exists, 10, what="one slot taken")
        direct = duo.info()["direct"]
        before = spun(cluster)
        assert [cluster.submit("add", i, 1).result(10) for i in range(30)] == list(range(1, 31))
        assert duo.info()["direct"] > direct, "the calls went straight to the other slot"
        assert spun(cluster) == before, "another call was out: nobody spun"
        gate.touch()
        assert held.result(20) == str(gate)


def test_a_task_slower_than_the_window_backs_spinning_off(ns: str) -> None:
    with Cluster(ns) as cluster:
        caught_one(cluster)
        caught, missed = spun(cluster)
        assert [cluster.submit("sleep", 0.005).result(10) for _ in range(8)] == [0.005] * 8
        now_caught, now_missed = spun(cluster)
        assert now_caught == caught, "a 5 ms task is never caught in a 0.1 ms window"
        assert 0 < now_missed - missed < 8, "after a miss, the next waits sleep at once"


def test_a_zero_window_turns_spinning_off(ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYROCLUSTER_REPLY_SPIN_US", "0")
    duo = RawWorker(ns, "duo")
    with Cluster(ns) as cluster:
        direct = duo.info()["direct"]
        assert [cluster.submit("add", i, 2).result(10) for i in range(60)] == [i + 2 for i in range(60)]
        assert duo.info()["direct"] > direct, "the calls went straight to the slot"
        assert spun(cluster) == (0, 0)
