"""Protocol v2 against real worker processes, driven through the raw protocol (docs/protocol.md):
one outcome per call, per-call timeouts, values that fail alone, the message cap, the catalog."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pyrocluster import codec, protocol
from pyrocluster.local import ManagedProcess, start_nameserver, start_worker
from tests.conftest import TASKS_FILE, Processes, wait_for
from tests.helpers.rawworker import RawWorker, decoded, outcomes_of

CAP_ENV = {"PYROCLUSTER_MAX_MESSAGE_MB": "1", "PYROCLUSTER_MAX_VALUE_BYTES": "1MiB"}
"""Both workers run under a 1 MB message cap, so that the cap tests need no large requests."""


@pytest.fixture(scope="module")
def workers() -> Iterator[tuple[str, dict[str, ManagedProcess]]]:
    """One name server and two one-slot workers (process and thread pool), shared by the module."""
    procs = Processes()
    try:
        ns_proc, ns = start_nameserver()
        procs.add(ns_proc)
        started = {
            pool: procs.add(
                start_worker(
                    ns,
                    ["--name", pool, "--services", "compute", "--tasks", TASKS_FILE, "--pool", pool,
                     "--concurrency", "1"],
                    env=CAP_ENV,
                    wait=False,
                )
            )
            for pool in ("process", "thread")
        }  # fmt: skip
        for proc in started.values():
            proc.wait_ready()
        yield ns, started
    finally:
        procs.stop_all()


@pytest.fixture
def raw_worker(workers: tuple[str, dict[str, ManagedProcess]]) -> Callable[..., RawWorker]:
    """``raw_worker(pool, serializer="msgpack")``: a raw client of that worker, idle and warm."""
    ns, _procs = workers

    def create(pool: str, serializer: str = "msgpack") -> RawWorker:
        client = RawWorker(ns, pool, serializer)
        wait_for(lambda: client.load()["running"] == 0, 10, what="the worker's slot is free")
        client.run_batch([client.call("add", 0, 0)])  # a new slot process has loaded its tasks
        return client

    return create


def kinds(reply: dict[str, Any]) -> list[int]:
    return [o[0] for o in reply["outcomes"]]


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_an_overrunning_call_times_out_alone_finished_ones_keep_results_the_rest_not_run(
    raw_worker, pool, tmp_path
):
    w = raw_worker(pool)
    gate = tmp_path / "release"  # the overrunning task runs until the test creates this file
    calls = [
        w.call("add", 1, 2),
        w.call("hold", str(gate), timeout=0.5),
        w.call("add", 3, 4),
        w.call("echo", "x"),
    ]
    started = time.monotonic()
    reply = w.run_batch(calls)
    elapsed = time.monotonic() - started
    assert kinds(reply) == [protocol.OK, protocol.TIMEOUT, protocol.NOT_RUN, protocol.NOT_RUN], reply
    assert decoded(reply["outcomes"][0]) == (protocol.OK, 3)
    error = decoded(reply["outcomes"][1])[1]
    assert error["type"] == "TaskTimeout" and "0.5 s" in error["message"]
    assert elapsed < 2.0, f"the batch took {elapsed:.1f} s: the timeout is the call's own (0.5 s)"
    assert reply["outcomes"][2][1] is None and reply["outcomes"][3][1] is None
    if pool == "process":
        # the slot process was replaced: the next batch runs at once, in a new process
        follow = w.run_batch([w.call("add", 5, 6)])
        assert decoded(follow["outcomes"][0]) == (protocol.OK, 11)
        assert follow["load"]["running"] == 0
    else:
        # the abandoned thread still holds the only slot, until it really ends
        assert reply["load"] == {"slots": 1, "running": 1, "queued": 0}
        assert w.info()["busy"] == 1
        gate.touch()
        wait_for(lambda: w.load()["running"] == 0, 5, what="the slot is free once the thread ended")


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_each_call_has_its_own_timeout_counted_from_its_own_start(raw_worker, pool):
    w = raw_worker(pool)
    # four calls of 0.3 s, each with a 0.6 s limit: 1.2 s in all, and none overran its own limit
    reply = w.run_batch([w.call("sleep", 0.3, timeout=0.6) for _ in range(4)])
    assert kinds(reply) == [protocol.OK] * 4, reply
    assert all(250 <= o[2] < 600 for o in reply["outcomes"]), reply


def test_an_overrun_is_caught_after_a_quick_call_of_a_shorter_timeout(raw_worker, tmp_path):
    # the slot's timer, armed for the first call's 0.2 s, goes off during the second call: it must
    # arm itself again for that call's own 0.6 s and then report the overrun
    w = raw_worker("process")
    calls = [
        w.call("sleep", 0.05, timeout=0.2),
        w.call("hold", str(tmp_path / "never"), timeout=0.6),
        w.call("add", 1, 1),
    ]
    started = time.monotonic()
    reply = w.run_batch(calls)
    elapsed = time.monotonic() - started
    assert kinds(reply) == [protocol.OK, protocol.TIMEOUT, protocol.NOT_RUN], reply
    assert "0.6 s" in decoded(reply["outcomes"][1])[1]["message"]
    assert 0.6 <= elapsed < 1.5, f"the overrun was reported after {elapsed:.2f} s"


@pytest.mark.parametrize("serializer", ["msgpack", "serpent"])
def test_int_keyed_dicts_round_trip_as_arguments_and_results(raw_worker, serializer):
    w = raw_worker("process", serializer)
    histogram = {1: 2, 3: 4, -5: {6: [7]}, 2**70: "big"}
    reply = w.run_batch([w.call("echo", "plain"), w.call("echo", histogram), w.call("add", 1, 2)])
    assert [decoded(o) for o in reply["outcomes"]] == [(0, "plain"), (0, histogram), (0, 3)]


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_an_unsendable_result_fails_its_call_alone(raw_worker, pool):
    w = raw_worker(pool)
    reply = w.run_batch([w.call("add", 1, 1), w.call("unsendable"), w.call("add", 2, 2)])
    results = [decoded(o) for o in reply["outcomes"]]
    assert results[0] == (protocol.OK, 2) and results[2] == (protocol.OK, 4)
    kind, error = results[1]
    assert kind == protocol.ERROR and error["type"] == "NotSendable" and "object" in error["message"]


def test_unknown_tasks_and_malformed_calls_fail_alone(raw_worker):
    w = raw_worker("thread")
    good = w.call("add", 1, 2)
    calls = [
        good,
        w.call("no.such.task"),
        ["id-x", "add", b"\xc1", 1.0, 0],  # a payload that is not msgpack
        ["id-y", "add", b"\x90", 1.0, 0],  # [] instead of [args, kwargs]
        ["id-z", "add", w.call("add", 1, 2)[2], -1, 0],  # a bad timeout
        ["short"],
        w.call("add", 3, 4),
    ]
    reply = w.run_batch(calls)
    assert kinds(reply) == [0, protocol.UNKNOWN_TASK, 1, 1, 1, 1, 0], reply
    assert decoded(reply["outcomes"][1])[1]["type"] == "UnknownTask"
    assert all(decoded(o)[1]["type"] == "InvalidCall" for o in reply["outcomes"][2:6])
    assert decoded(reply["outcomes"][6]) == (0, 7)
    assert "error" in w.run_batch([])  # the request itself is malformed
    with w.proxy("compute") as proxy:
        assert "error" in proxy.run_batch({"calls": [good]})


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_calls_as_columns_end_as_the_rows_they_stand_for(raw_worker, pool):
    w = raw_worker(pool)
    payloads = [codec.pack_call(list(a), {}) for a in [(1, 2), ("x", 1), ({1: [2]},), (3, 4)]]
    payloads += [b"\xc1", b"\x90"]  # not msgpack; [] instead of [args, kwargs]
    as_rows = w.run_batch([[f"r{i}", "add", p, 30.0, 0] for i, p in enumerate(payloads)])
    as_columns = w.run_columns("add", payloads)
    assert set(as_columns) == {"kinds", "values", "elapsed", "load"}, as_columns
    got, want = outcomes_of(as_columns), as_rows["outcomes"]
    assert [o[0] for o in got] == [o[0] for o in want] == [0, 1, 1, 0, 1, 1]
    assert [decoded(o)[1] for o in got[::3]] == [3, 7]
    assert [decoded(o)[1]["type"] for o in got if o[0]] == [decoded(o)[1]["type"] for o in want if o[0]]
    # anything but the common batch is checked call by call, as its rows, and answered as rows
    unknown = w.run_columns("no.such.task", payloads[:2])
    assert kinds(unknown) == [protocol.UNKNOWN_TASK] * 2, unknown
    bad = w.run_columns("add", payloads[:2], timeout=-1, priority="high")
    assert [decoded(o)[1]["type"] for o in bad["outcomes"]] == ["InvalidCall"] * 2, bad
    assert "error" in w.run_columns("add", payloads[:2], ids=["only-one"])
    assert "error" in w.run_columns("add", [])
    # a full reply sends the rest back in columns too
    full = w.run_columns("blob", [codec.pack_call([400_000], {})] * 3)
    assert [o[0] for o in outcomes_of(full)] == [protocol.OK, protocol.OK, protocol.NOT_RUN], full


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_message_cap_result_too_large_alone_and_a_full_reply_sends_the_rest_back(raw_worker, pool):
    w = raw_worker(pool)
    reply = w.run_batch([w.call("add", 1, 1), w.call("blob", 2 * 1024 * 1024), w.call("add", 2, 2)])
    assert kinds(reply) == [protocol.OK, protocol.ERROR, protocol.OK], reply
    too_large = decoded(reply["outcomes"][1])[1]
    assert too_large["type"] == "ResultTooLarge"
    assert "over max_value_bytes (1048576 bytes)" in too_large["message"], too_large
    # three results of 0.4 MB: two fit under the 1 MB cap, the third goes back unrun
    reply = w.run_batch([w.call("blob", 400_000) for _ in range(3)] + [w.call("add", 0, 0)])
    assert kinds(reply) == [protocol.OK, protocol.OK, protocol.NOT_RUN, protocol.NOT_RUN], reply
    assert decoded(reply["outcomes"][0])[1] == "x" * 400_000


def test_a_crashing_task_fails_alone_and_its_slot_process_is_replaced(raw_worker):
    w = raw_worker("process")
    reply = w.run_batch([w.call("add", 1, 1), w.call("die", 7), w.call("add", 2, 2)])
    # the finished call keeps its result; the one after never started: it goes back, at no cost
    assert kinds(reply) == [protocol.OK, protocol.CRASHED, protocol.NOT_RUN], reply
    assert decoded(reply["outcomes"][0]) == (protocol.OK, 2)
    assert "exit code 7" in decoded(reply["outcomes"][1])[1]["message"]
    assert decoded(w.run_batch([w.call("add", 2, 2)])["outcomes"][0]) == (protocol.OK, 4)


def test_catalog_in_registration_info_and_ready_line(raw_worker, workers):
    ns, procs = workers
    w = raw_worker("process")
    assert {"add", "echo", "interval", "blob"} <= w.entry.tasks
    info = w.info()
    assert info["tasks"] == sorted(info["tasks"]) and set(info["tasks"]) == w.entry.tasks
    assert procs["process"].ready_line.endswith(f"tasks {len(info['tasks'])}")
    plain = start_worker(ns, ["--name", "plain", "--services", "compute", "--concurrency", "1"])
    try:
        other = RawWorker(ns, "plain")
        assert "interval" not in other.entry.tasks and "add" in other.entry.tasks
        assert plain.ready_line.endswith(f"tasks {len(other.entry.tasks)}")
        assert other.load() == {"slots": 1, "running": 0, "queued": 0}
    finally:
        plain.stop()
