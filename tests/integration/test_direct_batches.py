"""Batches on the direct path (a coordinator's batch of cheap calls straight to a lent slot) on a
real one-slot worker: they are taken and counted, and a kill, an overrun and a cancel in the
middle of one end as on the ``run_batch`` path: the calls that finished keep their outcomes, the
one in progress gets the end's, the rest run again at no cost or end cancelled."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from pyrocluster import Cluster, TaskFailed, TaskTimeout
from pyrocluster.coordinator.calls import TaskFuture
from tests.conftest import TASKS_FILE, wait_for
from tests.helpers.rawworker import RawWorker
from tests.integration.test_direct_path import FOREVER, direct_calls, side_by_side, went_direct
from tests.integration.test_direct_path import ns as ns  # noqa: F401 - the module's worker
from tests.integration.test_direct_path import solo as solo  # noqa: F401


def learn_cheap(cluster: Cluster, scratch: Path) -> None:
    """Run ``logged`` until this coordinator knows it is cheap (its batches then go out whole)."""
    list(cluster.starmap("logged", [(f"warm{i}", str(scratch)) for i in range(64)]))


def start_batch(
    cluster: Cluster, solo: RawWorker, log: Path, calls: list[tuple], timeout: float = 30.0
) -> tuple[int, int, list[TaskFuture]]:
    """``logged(key, log, *rest)`` per ``(key, *rest)`` in ``calls``, queued at once (one batch)
    once ``logged`` is known cheap; the slot's pid, the worker's direct calls before, the futures."""
    pid = went_direct(cluster, solo)
    learn_cheap(cluster, log.with_name("warm"))
    before = direct_calls(solo)
    made = [
        cluster.make_call("compute", "logged", [key, str(log), *rest], {}, timeout=timeout)
        for key, *rest in calls
    ]
    cluster.submit_calls(made)
    return pid, before, [call.future for call in made]


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_map_of_cheap_calls_goes_straight_to_the_slot_and_counts_in_the_worker(solo: RawWorker) -> None:
    with Cluster(solo.settings.ns_address) as cluster:
        went_direct(cluster, solo)
        before, done = direct_calls(solo), solo.info()["done"]
        # enough batches that their records of ended calls pass, more than once, the mark at which
        # the slot asks the worker to read them
        n = 30_000
        assert list(cluster.starmap("add", ((i, i) for i in range(n)))) == [2 * i for i in range(n)]
    info = solo.info()
    assert info["direct"] >= before + n // 2, ("most batches went straight to the slot", info)
    assert info["done"] == done + n, ("every call counted once", info)


def test_calls_failing_in_a_batch_fail_alone_and_the_others_keep_their_values(solo: RawWorker) -> None:
    """The batch goes to the slot as columns and comes back so: a reply with failures in it is
    read call by call, each failure its own call's, each value its own."""
    with Cluster(solo.settings.ns_address) as cluster:
        went_direct(cluster, solo)
        list(cluster.starmap("add", [(i, i) for i in range(256)]))  # known cheap: one batch next
        before = direct_calls(solo)
        failing = {3, 10, 17, 24, 31, 38, 39}
        args = [([i, "x"] if i % 2 else [i, {1: [i]}]) if i in failing else [i, i] for i in range(40)]
        made = [cluster.make_call("compute", "add", a, {}) for a in args]
        cluster.submit_calls(made)
        for i, call in enumerate(made):
            if i in failing:
                with pytest.raises(TaskFailed, match="TypeError"):
                    call.future.result(30)
            else:
                assert call.future.result(30) == 2 * i
            assert call.future.attempts == 1
    assert direct_calls(solo) >= before + 40, "the batch went straight to the slot"


def test_a_slot_killed_mid_batch_keeps_the_finished_and_runs_the_rest_again(
    solo: RawWorker, tmp_path: Path
) -> None:
    log = tmp_path / "runs"
    with Cluster(solo.settings.ns_address, retries=1) as cluster:
        pid, before, futures = start_batch(
            cluster, solo, log, [("k0",), ("k1",), ("k2", 1.5), ("k3",), ("k4",)]
        )
        wait_for(lambda: "k2" in lines(log), 10, what="the batch's third call running")
        assert direct_calls(solo) == before, "nothing of the batch counted before it ends"
        os.kill(pid, signal.SIGKILL)
        assert [f.result(30) for f in futures] == ["k0", "k1", "k2", "k3", "k4"]
        assert [f.attempts for f in futures] == [1, 1, 2, 1, 1], "only the call in progress paid an attempt"
    runs = lines(log)
    assert sorted(runs) == ["k0", "k1", "k2", "k2", "k3", "k4"], (
        "the finished kept their outcome, none ran twice"
    )
    assert runs[:3] == ["k0", "k1", "k2"], "the batch went straight to the slot, in order"
    assert direct_calls(solo) >= before + 3, "the dead batch's calls were counted"


def test_a_gil_holding_overrun_in_a_batch_times_out_alone(solo: RawWorker, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    with Cluster(solo.settings.ns_address, retries=0) as cluster:
        pid, before, futures = start_batch(
            cluster, solo, log, [("a",), ("b", 0.0, FOREVER), ("c",)], timeout=0.5
        )
        started = time.monotonic()  # the batch was just queued
        assert futures[0].result(20) == "a"
        with pytest.raises(TaskTimeout, match="its process was killed"):
            futures[1].result(20)
        assert futures[2].result(20) == "c", "the call after it ran again, elsewhere or in a new slot"
        assert futures[2].attempts == 1
        assert time.monotonic() - started < 10
        assert direct_calls(solo) >= before + 2, "the batch went straight to the slot"
        assert went_direct(cluster, solo) != pid, "the slot process was replaced"
    assert sorted(lines(log)) == ["a", "b", "c"]


def test_cancelling_a_batchs_calls_skips_those_to_come_and_kills_the_one_running(
    solo: RawWorker, tmp_path: Path
) -> None:
    log = tmp_path / "runs"
    with Cluster(solo.settings.ns_address) as cluster:
        calls = [("k0",), ("k1", 30.0)] + [(f"k{i}",) for i in range(2, 6)]
        pid, before, futures = start_batch(cluster, solo, log, calls)
        wait_for(lambda: "k1" in lines(log), 10, what="the batch's second call running")
        for future in reversed(futures[1:]):  # those to come first, then the one running
            assert cluster.cancel(future)
        assert futures[0].result(10) == "k0"
        for future in futures[1:]:
            with pytest.raises(CancelledError):
                future.result(10)
        wait_for(lambda: direct_calls(solo) >= before + 2, 10, what="the batch counted as direct calls")
        assert wait_for(lambda: cluster.submit("whoami").result(10) != pid, 15, what="a new slot process")
    wait_for(lambda: solo.load().get("direct"), 15, what="the slot lent again")
    assert lines(log) == ["k0", "k1"], "the cancelled calls to come never ran"


def test_two_coordinators_mapping_on_one_slot_run_every_call_once(solo: RawWorker, tmp_path: Path) -> None:
    """Each batch runs straight in the slot while the worker lends it, else through the worker
    (while the other's batch waits at the gate, it lends nothing): every call runs once either way."""
    log = tmp_path / "runs"
    results: dict[str, list[str]] = {}

    def run(name: str) -> None:
        with Cluster(solo.settings.ns_address) as cluster:
            went_direct(cluster, solo)
            results[name] = list(cluster.starmap("logged", [(f"{name}{i}", str(log)) for i in range(3000)]))

    side_by_side(run, "a", "b")
    expected = {name: [f"{name}{i}" for i in range(3000)] for name in ("a", "b")}
    assert results == expected
    assert sorted(lines(log)) == sorted(expected["a"] + expected["b"]), "a call ran twice or never"


def test_big_results_of_a_batch_all_come_back_those_past_the_reply_sent_again(solo: RawWorker) -> None:
    """A reply holds what the message cap allows; the calls past it come back NOT_RUN and go
    again at no cost (as from a batch the worker runs)."""
    size = 12 * 1024 * 1024
    with Cluster(solo.settings.ns_address) as cluster:
        went_direct(cluster, solo)
        list(cluster.map("blob", [10] * 64))  # known cheap: the next calls go out as one batch
        before = direct_calls(solo)
        made = [cluster.make_call("compute", "blob", [size], {}) for _ in range(8)]
        cluster.submit_calls(made)
        assert [len(call.future.result(60)) for call in made] == [size] * 8
        assert [call.future.attempts for call in made] == [1] * 8, "the calls past the reply cost no attempt"
    # straight to the slot (the calls sent again may go either way), each call counted once
    assert before < direct_calls(solo) <= before + 8


def test_a_sigterm_mid_batch_lets_the_batch_finish_before_the_worker_exits(
    worker_factory, nameserver: str, tmp_path: Path
) -> None:
    (proc,) = worker_factory(
        1, "--concurrency", "1", "--services", "compute", "--tasks", TASKS_FILE, "--name", "leaving"
    )
    w = RawWorker(nameserver, "leaving")
    wait_for(lambda: w.load().get("direct"), 15, what="the slot lent")
    log = tmp_path / "runs"
    with Cluster(nameserver, retries=0) as cluster:
        _, _, futures = start_batch(cluster, w, log, [("k0",), ("k1", 1.0), ("k2",), ("k3",)])
        wait_for(lambda: "k1" in lines(log), 10, what="the batch's second call running")
        proc.signal(signal.SIGTERM)
        assert [f.result(30) for f in futures] == ["k0", "k1", "k2", "k3"]
        assert [f.attempts for f in futures] == [1] * 4, "the batch finished where it ran"
    assert proc.proc.wait(timeout=30) == 0
    assert sorted(lines(log)) == ["k0", "k1", "k2", "k3"]
