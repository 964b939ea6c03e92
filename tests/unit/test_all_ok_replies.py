"""The dispatcher's short way for a reply whose every call succeeded (``Failover._apply_ok``) and
for calls that arrive encoded (``Calls.starmap``): the same outcomes as the call-by-call way.

Fake links and a clock we move, as in ``test_dispatch_policy.py``.
"""

from __future__ import annotations

from concurrent.futures import CancelledError
from typing import Any

import pytest

from pyrocluster import codec
from pyrocluster.coordinator.book import SUSPECT
from pyrocluster.coordinator.calls import Call, CallGroup, tell_waiters
from pyrocluster.errors import TaskFailed
from tests.unit.test_dispatch_policy import Rig, entry, err, ok

pytestmark = pytest.mark.timeout(10)


def calls(rig: Rig, n: int, waiter: Any = None, payloads: list[bytes] | None = None) -> list[Call]:
    """``n`` calls of ``add`` submitted together, each worker taking them in one batch."""
    for rec in rig.d.records.values():
        rec.sizers["compute"].size = n
    made = [
        Call("compute", "add", [i, i], {}, frozenset(), 10.0, 2, False, waiter, payload=p)
        for i, p in zip(range(n), payloads or [b""] * n, strict=True)
    ]
    rig.d.submit(made)
    return made


def test_an_all_ok_reply_settles_every_call_with_its_value_worker_and_time():
    rig = Rig(entry("a"), max_batch=8)
    sent = calls(rig, 3)
    batch = rig.last("a")
    assert batch.calls == sent
    rig.d.batch_replied(
        rig.link("a"), batch, {"outcomes": [[0, codec.pack(2 * i), 1.5 + i] for i in range(3)]}, 0.002
    )
    assert [c.future.result(0) for c in sent] == [0, 2, 4]
    assert [(c.worker, c.elapsed_ms, c.attempts, c.error) for c in sent] == [
        ("a", 1.5, 1, None),
        ("a", 2.5, 1, None),
        ("a", 3.5, 1, None),
    ]
    assert rig.d.records["a"].batches == {}  # retired: the worker's slot is free again


def test_a_group_waiter_is_told_once_about_the_whole_reply():
    rig = Rig(entry("a"), max_batch=8)
    told: list[list[Call]] = []
    group = CallGroup(4)

    class Waiter:
        def settled(self, done: list[Call]) -> None:
            told.append(done)
            group.settled(done)

    sent = calls(rig, 4, Waiter())
    rig.reply("a", rig.last("a"), [ok(i) for i in range(4)])
    assert told == [sent] and group.wait(0)
    assert [c.value for c in sent] == [0, 1, 2, 3]


def test_a_call_cancelled_while_its_batch_ran_stays_cancelled_and_its_mates_keep_their_values():
    rig = Rig(entry("a"), max_batch=8)
    first, middle, last = calls(rig, 3)
    assert rig.d.cancel([middle]) == [middle]
    rig.reply("a", rig.last("a"), [ok(10), ok(11), ok(12)])  # the worker ran it before the cancel
    assert (first.future.result(0), last.future.result(0)) == (10, 12)
    with pytest.raises(CancelledError):
        middle.future.result(0)


def test_a_late_all_ok_reply_of_a_batch_taken_back_settles_its_calls_once():
    rig = Rig(entry("a"), max_batch=8)
    sent = calls(rig, 2)
    stale = rig.last("a")
    rig.d.update_workers([entry("a"), entry("b")])
    rig.d.records["b"].sizers["compute"].size = 2
    rig.d.probe_failed(rig.link("a"), "stopped answering")
    assert rig.d.records["a"].state == SUSPECT
    again = rig.last("b")  # the same calls, their second attempt
    assert again.calls == sent and [c.attempts for c in sent] == [2, 2]
    rig.reply("a", stale, [ok(1), ok(2)])  # the silent worker answers after all
    assert [c.future.result(0) for c in sent] == [1, 2] and [c.worker for c in sent] == ["a", "a"]
    rig.reply("b", again, [ok(7), ok(8)])  # the second attempt's reply changes nothing
    assert [c.future.result(0) for c in sent] == [1, 2] and [c.worker for c in sent] == ["a", "a"]
    assert rig.d.records["b"].batches == {}


def test_one_failed_call_takes_the_call_by_call_way_and_fails_alone():
    rig = Rig(entry("a"), max_batch=8)
    good, bad = calls(rig, 2)
    rig.reply("a", rig.last("a"), [ok(3), err(1)])
    assert good.future.result(0) == 3
    with pytest.raises(TaskFailed, match="boom"):
        bad.future.result(0)


def test_calls_that_arrive_encoded_are_sent_as_they_are_and_the_cap_still_holds():
    rig = Rig(entry("a"), max_batch=8)
    payloads = [codec.pack([[i, i], {}]) for i in range(3)]
    sent = calls(rig, 3, payloads=payloads)
    assert [c.payload for c in rig.last("a").calls] == payloads
    assert all(c.payload is p for c, p in zip(sent, payloads, strict=True))  # not encoded again
    rig.d.max_call_bytes = 8
    big = Call("compute", "echo", ["x" * 50], {}, frozenset(), 10.0, 2, False,
               payload=codec.pack([["x" * 50], {}]))  # fmt: skip
    small = Call("compute", "add", [1, 1], {}, frozenset(), 10.0, 2, False, payload=codec.pack([[1, 1], {}]))
    rig.d.submit([big, small])
    with pytest.raises(TaskFailed, match="ArgumentsTooLarge"):
        big.future.result(0)
    assert not small.done


class Told:
    """A waiter that keeps what it was told."""

    def __init__(self) -> None:
        self.told: list[list[Call]] = []

    def settled(self, done: list[Call]) -> None:
        self.told.append(done)


@pytest.mark.parametrize("runs", [[16, 16], [16, 1, 16], [1] * 20])
def test_each_waiter_is_told_once_of_its_calls_in_order_however_they_mix(runs: list[int]):
    waiters = [Told(), Told()]
    mixed = [
        Call("compute", "add", [1, 1], {}, frozenset(), 10.0, 0, False, waiters[j % 2])
        for j, n in enumerate(runs)
        for _ in range(n)
    ]
    tell_waiters(mixed)
    for k, waiter in enumerate(waiters):
        assert waiter.told == [[c for c in mixed if c.waiter is waiter]], k


@pytest.mark.parametrize("all_ok", [True, False])
def test_a_replys_load_counts_the_replied_batch_as_ours_no_longer(all_ok: bool):
    # The worker's load says what it holds after this batch: one batch of another coordinator.
    # Read while this batch still counted as ours out, the other's batch looked like ours and
    # this coordinator sent as if the worker were its alone (a map took 60-80% of a shared slot).
    rig = Rig(entry("a"), max_batch=8)
    calls(rig, 2)
    assert rig.d.records["a"].in_flight["compute"] == 1
    load = {"slots": 1, "running": 1, "queued": 0}
    rig.reply("a", rig.last("a"), [ok(1), ok(2) if all_ok else err(1)], load=load)
    assert rig.d.records["a"].in_flight["compute"] == 0
    assert rig.d.records["a"].others == 1
