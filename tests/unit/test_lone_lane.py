"""The short way of a call submitted alone (``coordinator/lonelane.py``), with fake links and a
clock we move: what it books, what it learns, and when it leaves the call to the ordinary path."""

from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout

import pytest

from pyrocluster import codec, protocol
from pyrocluster.coordinator.balancer import REPLY_OVERDUE_S
from pyrocluster.coordinator.policy import Happened
from tests.unit.test_dispatch_policy import Rig, entry, err, ok


def test_a_lone_call_is_booked_with_its_deadline_and_its_success_frees_the_slot_and_teaches_its_cost():
    rig = Rig(entry("a"))
    c = rig.call("add", 1, 2)
    batch = rig.last("a")
    assert batch.calls == [c] and batch.by_sender and c.attempts == 1 and c.batch_id == batch.id
    assert rig.d.in_flight() == 1 and rig.d.records["a"].room("compute", rig.clock.now) == 0
    assert batch.deadline == rig.clock.now + 10.0 + 1.0 + 10.0  # timeout, per-call and batch grace
    rig.reply("a", batch, [ok(3)])
    assert c.future.result(0) == 3 and (c.worker, c.elapsed_ms) == ("a", 1.0)
    assert rig.d.in_flight() == 0 and rig.d.records["a"].room("compute", rig.clock.now) == 1
    assert rig.d._costs[("compute", "add")].per_call_s == 0.001
    assert rig.d.records["a"].sizers["compute"].per_call_s == 0.001


def test_a_lone_reply_carrying_a_load_teaches_what_other_coordinators_hold():
    rig = Rig(entry("a", slots=4))
    rig.call()
    rig.reply("a", rig.last("a"), [ok(3)], load={"slots": 4, "running": 3, "queued": 0})
    assert rig.d.records["a"].others == 3


def test_a_stale_attempts_success_settles_the_call_and_the_live_attempt_is_retired_on_its_reply():
    rig = Rig(entry("a"), entry("b"))
    c = rig.call()
    first = "a" if rig.link("a").sent else "b"
    second = "b" if first == "a" else "a"
    stale = rig.last(first)
    rig.d.batch_failed(rig.link(first), stale, Happened.CLOSED, "connection closed")
    live = rig.last(second)
    assert live.calls == [c] and c.attempts == 2
    rig.reply(first, stale, [ok("late")])  # the first attempt ran after all
    assert c.future.result(0) == "late" and c.worker == first
    rig.reply(second, live, [ok("again")])
    assert c.future.result(0) == "late" and rig.d.in_flight() == 0


def test_a_lone_calls_failure_goes_through_the_failover_table():
    rig = Rig(entry("a"))
    c = rig.call(retries=1)
    first = rig.last("a")
    rig.reply("a", first, [err(protocol.CRASHED, "ProcessDied", "slot died")])
    again = rig.last("a")
    assert again is not first and again.calls == [c] and c.attempts == 2 and rig.d.retried == 1
    rig.reply("a", again, [ok(3)])
    assert c.future.result(0) == 3 and rig.d.in_flight() == 0


def test_a_lone_call_waits_behind_calls_already_queued_even_when_a_worker_is_free():
    rig = Rig(entry("a"), entry("b", tasks=frozenset({"echo"})))
    rig.call("sleep", 1)  # takes a's slot; b runs only echo
    waiting = rig.call("add", 1, 1)  # no room for it: queued
    assert not rig.link("b").sent and not waiting.done
    later = rig.call("echo", 2)  # b has room, but a call waits: the ordinary round sends it
    assert rig.last("b").calls == [later] and not rig.last("b").by_sender
    rig.reply("a", rig.last("a"), [ok(None)])
    assert rig.last("a").calls == [waiting]


def cheap_rig(slots: int = 4) -> Rig:
    """A rig whose ``add`` is known to be cheap (0.01 ms a call), with two lone calls of it out."""
    rig = Rig(entry("a", slots=slots), max_batch=64)
    rig.call()
    rig.reply("a", rig.last("a"), [[protocol.OK, codec.pack(3), 0.01]])
    assert rig.d._costs[("compute", "add")].cheap
    rig.call()
    rig.call()
    assert rig.d.in_flight() == 2
    return rig


def test_a_held_call_its_caller_blocks_on_goes_out_alone():
    rig = cheap_rig()
    held = rig.call()  # two cheap calls out: it waits to ride in the next batch
    assert held.attempts == 0 and rig.d.in_flight() == 2
    with pytest.raises(FutureTimeout):
        held.future.result(0)  # its caller blocks on it: sent alone now (the fake link never answers)
    batch = rig.last("a")
    assert batch.calls == [held] and batch.by_sender and held.attempts == 1
    assert rig.d.in_flight() == 3 and rig.d._room.empty()
    rig.reply("a", batch, [ok(3)])
    assert held.future.result(0) == 3


def test_a_held_call_without_room_waits_first_in_line_and_is_sent_once():
    rig = cheap_rig(slots=2)  # both slots taken
    held, later = rig.call(), rig.call()
    with pytest.raises(FutureTimeout):
        held.future.result(0)
    assert held.attempts == 0 and list(rig.d._room.calls()) == [held, later]  # still first
    rig.reply("a", rig.d.links["a"].sent[1], [ok(3)])
    assert held.attempts == 1 and held in rig.last("a").calls  # its turn came as before


def test_a_blocked_caller_passes_no_call_of_a_higher_priority():
    rig = cheap_rig(slots=2)
    held = rig.call()
    urgent = rig.call(priority=5)
    rig.reply("a", rig.d.links["a"].sent[1], [ok(3)])  # room for one: the urgent call takes it
    assert urgent.attempts == 1 and held.attempts == 0
    with pytest.raises(FutureTimeout):
        held.future.result(0)
    assert held.attempts == 0, "a call of a higher priority was waiting when it blocked: no room left"


def test_a_trickle_held_behind_stuck_cheap_calls_goes_around_them_once_no_reply_came_for_long():
    # Two cheap calls out that never answer (a stalled worker, or calls far slower than their
    # task's usual) held the few calls behind them until one ended: now only for REPLY_OVERDUE_S.
    rig = cheap_rig()
    held = [rig.call(), rig.call()]
    assert not any(c.attempts for c in held)

    def dispatch_after(seconds: float) -> None:
        rig.clock.now += seconds
        with rig.d._cond:
            rig.d._dispatch_ready()  # what the dispatcher's periodic check does

    dispatch_after(REPLY_OVERDUE_S / 2)
    assert not any(c.attempts for c in held), "a reply may yet come: they wait to ride along"
    dispatch_after(REPLY_OVERDUE_S / 2)
    assert all(c.attempts == 1 for c in held) and rig.last("a").calls == held
    assert rig.d._room.empty()
