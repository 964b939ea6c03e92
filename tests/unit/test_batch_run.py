"""One batch's calls in one slot, run in this thread (no watcher): outcomes, skips, the reply budget."""

from __future__ import annotations

import threading
import time

from pyrocluster import codec, protocol
from pyrocluster.slots.batch import OUTCOME_OVERHEAD_BYTES, BatchRun, Budget, ended_outcomes, not_run

ROOMY = Budget(10**6, 10**6)


def call(name: str, *args: object, timeout: float = 10.0) -> list[object]:
    return [name, codec.pack_call(args, {}), timeout]


def values(run: BatchRun) -> list[tuple[int, object]]:
    return [(k, None if v is None else codec.unpack(v)) for k, v, _ms in run.outcomes]


def test_outcomes_are_encoded_one_call_at_a_time():
    run = BatchRun([call("add", 1, 2), call("echo", {1: {2: 3}}), call("fail", "boom"), call("nope")], ROOMY)
    run.run()
    (ok, three), (ok2, keyed), (err, raised), (unknown, missing) = values(run)
    assert (ok, three, ok2, keyed) == (protocol.OK, 3, protocol.OK, {1: {2: 3}})
    assert err == protocol.ERROR and raised["type"] == "RuntimeError" and raised["message"] == "boom"
    assert unknown == protocol.UNKNOWN_TASK and missing["type"] == "UnknownTask"
    assert run.watch() is True  # already ended: the watcher returns at once


def test_bad_payloads_fail_their_call_alone():
    calls = [
        ["add", b"\xc1", 1.0],
        ["add", codec.pack([1, 2, 3]), 1.0],
        ["add", codec.pack([[1], {3: 4}]), 1.0],
    ]
    run = BatchRun([*calls, call("add", 2, 2)], ROOMY)
    run.run()
    kinds = [k for k, _ in values(run)]
    assert kinds == [protocol.ERROR, protocol.ERROR, protocol.ERROR, protocol.OK]
    assert all(v["type"] == "InvalidCall" for _, v in values(run)[:3])


def test_skipped_calls_are_cancelled_without_running():
    run = BatchRun([call("add", 1, 1), call("fail", "must not run"), call("add", 2, 2)], ROOMY, skip=[1])
    run.run()
    assert values(run) == [(protocol.OK, 2), (protocol.CANCELLED, None), (protocol.OK, 4)]


def test_a_result_over_the_budget_is_too_large_and_a_full_reply_sends_the_rest_back():
    budget = Budget(3 * (1000 + OUTCOME_OVERHEAD_BYTES), 5000)
    run = BatchRun([call("add", 0, 0), call("echo", "x" * 10_000), call("add", 1, 1)], budget)
    run.run()
    assert [k for k, _ in values(run)] == [protocol.OK, protocol.ERROR, protocol.OK]
    assert values(run)[1][1]["type"] == "ResultTooLarge"
    assert "result of 10003 bytes is over max_value_bytes (5000 bytes)" in values(run)[1][1]["message"]
    run = BatchRun([call("echo", "y" * 1000) for _ in range(4)], budget)
    run.run()
    assert [k for k, _ in values(run)] == [protocol.OK, protocol.OK, protocol.NOT_RUN, protocol.NOT_RUN]


def test_a_reply_takes_one_value_over_the_reply_budget_besides_small_ones():
    budget = Budget(3 * (1000 + OUTCOME_OVERHEAD_BYTES), 50_000)
    batch = [call("add", 0, 0), call("echo", "x" * 10_000), call("add", 1, 1), call("echo", "z" * 9_000)]
    run = BatchRun(batch, budget)
    run.run()
    assert [k for k, _ in values(run)] == [protocol.OK, protocol.OK, protocol.OK, protocol.NOT_RUN]
    assert values(run)[1][1] == "x" * 10_000


def test_cancel_before_the_start_skips_and_after_the_end_changes_nothing():
    run = BatchRun([call("add", 1, 1), call("add", 2, 2)], ROOMY)
    run.cancel([0])
    run.run()
    assert values(run) == [(protocol.CANCELLED, None), (protocol.OK, 4)]
    run.cancel([1])
    assert values(run)[1] == (protocol.OK, 4) and not run.stopped


def test_an_ended_batch_keeps_the_finished_outcomes_and_blames_only_the_running_call():
    ok = [protocol.OK, codec.pack(2), 1.0]
    crashed = [protocol.CRASHED, codec.pack({"type": "ProcessDied"}), 0.0]
    outcomes = ended_outcomes([ok], 5, {3}, current=1, current_outcome=crashed)
    assert outcomes == [ok, crashed, not_run(), [protocol.CANCELLED, None, 0.0], not_run()]
    assert ended_outcomes([ok], 2, set()) == [ok, not_run()]


def test_a_watcher_asleep_on_one_calls_deadline_sees_the_next_calls_shorter_one():
    run = BatchRun([call("sleep", 0.3, timeout=5.0), call("sleep", 3.0, timeout=0.3)], ROOMY)
    threading.Thread(target=run.run, daemon=True).start()
    started = time.monotonic()
    assert run.watch() is False  # the second call overran its 0.3 s
    assert time.monotonic() - started < 3.0  # not the first call's 5 s deadline
    assert [k for k, _ in values(run)] == [protocol.OK, protocol.TIMEOUT]
