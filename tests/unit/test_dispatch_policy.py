"""Dispatcher decisions with no sockets and no sleeping: one test per row of the failover table.

The links are fakes that record what they were told to send; the clock is a number we move.
"""

from __future__ import annotations

from concurrent.futures import CancelledError
from typing import Any

import pytest

from pyrocluster import codec, protocol
from pyrocluster.config import Settings
from pyrocluster.coordinator import overdue
from pyrocluster.coordinator.book import BUSY_BACKOFF_S, DRAINING, READY, SUSPECT
from pyrocluster.coordinator.calls import Batch, Call
from pyrocluster.coordinator.dispatch import Dispatcher
from pyrocluster.coordinator.policy import TABLE, Happened
from pyrocluster.errors import TaskFailed, TaskTimeout, WorkerUnavailable
from pyrocluster.nameserver.registry import WorkerEntry
from pyrocluster.protocol import HELD_PER_SLOT

BUILTIN = frozenset({"add", "echo", "sleep", "fail"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeLink:
    def __init__(self, entry: WorkerEntry, owner: Any) -> None:
        self.name = entry.name
        self.sent: list[Batch] = []
        self.cancelled: list[list[str]] = []
        self.aborted = 0
        self.stopped = False
        self.opened_ahead = 0

    def send(self, batch: Batch) -> None:
        self.sent.append(batch)

    def drop_unsent(self) -> None:
        pass

    def abort_calls(self) -> None:
        self.aborted += 1

    def cancel(self, call_ids: list[str], batch_ids: set[int]) -> None:
        self.cancelled.append(call_ids)

    def wake(self) -> None:
        pass

    def stop(self) -> None:
        self.stopped = True

    def open_ahead(self, service: str, count: int) -> None:
        self.opened_ahead = count


def entry(name: str, slots: int = 1, tags: str = "", tasks: frozenset[str] = BUILTIN) -> WorkerEntry:
    uris = {"compute": f"PYRO:c@127.0.0.1:1/{name}", "control": f"PYRO:k@127.0.0.1:1/{name}"}
    return WorkerEntry(name, uris, {"compute": slots}, frozenset(t for t in tags.split(",") if t), tasks)


class Rig:
    """A dispatcher over fake workers, with helpers to answer what it sent."""

    def __init__(self, *entries: WorkerEntry, wait_s: float = 5.0, max_batch: int = 1) -> None:
        self.clock = Clock()
        self.d = Dispatcher(
            Settings(), probe_timeout_s=3.0, wait_s=wait_s, max_batch=max_batch, clock=self.clock,
            link_factory=FakeLink,
        )  # fmt: skip
        self.d.update_workers(list(entries))

    def link(self, name: str) -> FakeLink:
        link = self.d.links[name]
        assert isinstance(link, FakeLink)
        return link

    def call(self, name: str = "add", *args: Any, retries: int = 2, tags: str = "", **kw: Any) -> Call:
        tagset = frozenset(t for t in tags.split(",") if t)
        on_error, priority = kw.pop("retry_on_error", False), kw.pop("priority", 0)
        c = Call(
            "compute", name, list(args or (1, 2)), {}, tagset, 10.0, retries, on_error, priority=priority
        )
        self.d.submit([c])
        return c

    def last(self, worker: str) -> Batch:
        return self.link(worker).sent[-1]

    def reply(self, worker: str, batch: Batch, outcomes: list[list[Any]], **extra: Any) -> None:
        self.d.batch_replied(self.link(worker), batch, {"outcomes": outcomes, **extra}, 0.001)

    def raw_reply(self, worker: str, batch: Batch, reply: Any) -> None:
        self.d.batch_replied(self.link(worker), batch, reply, 0.001)


def ok(value: Any) -> list[Any]:
    return [protocol.OK, codec.pack(value), 1.0]


def err(kind: int, type_: str = "RuntimeError", message: str = "boom") -> list[Any]:
    return [kind, codec.pack({"type": type_, "message": message, "traceback": "tb"}), 1.0]


def test_every_happening_has_a_row():
    assert set(TABLE) == set(Happened)


def test_ok_settles_the_call_with_its_decoded_value():
    rig = Rig(entry("a"))
    c = rig.call("echo", {1: 2, 3: 4})
    rig.reply("a", rig.last("a"), [ok({1: 2, 3: 4})])
    assert c.future.result(0) == {1: 2, 3: 4}
    assert (c.attempts, c.worker) == (1, "a")


def test_refused_requeues_without_an_attempt_and_sets_the_worker_aside():
    rig = Rig(entry("a", slots=2), entry("b"))
    c = rig.call()
    assert rig.link("a").sent  # most free slots
    rig.d.batch_failed(rig.link("a"), rig.last("a"), Happened.REFUSED, "connection refused")
    assert rig.d.records["a"].state == SUSPECT
    assert rig.last("b").calls == [c]
    assert c.attempts == 1  # only the attempt on b counts
    rig.reply("b", rig.last("b"), [ok(3)])
    assert c.future.result(0) == 3


def test_draining_reply_requeues_without_an_attempt():
    rig = Rig(entry("a", slots=2), entry("b"))
    c = rig.call()
    rig.raw_reply(
        "a", rig.last("a"), {"refused": "draining", "load": {"slots": 2, "running": 0, "queued": 0}}
    )
    assert rig.d.records["a"].state == DRAINING
    assert rig.last("b").calls == [c] and c.attempts == 1


def test_busy_requeues_without_an_attempt_and_backs_off_that_worker():
    rig = Rig(entry("a"))
    c = rig.call()
    rig.raw_reply("a", rig.last("a"), {"busy": True})
    assert c.attempts == 0 and len(rig.link("a").sent) == 1  # not re-sent at once
    rig.clock.now += BUSY_BACKOFF_S
    rig.d.submit([])
    assert rig.last("a").calls == [c] and c.attempts == 1


@pytest.mark.parametrize("happened", [Happened.CLOSED, Happened.TIMED_OUT])
def test_broken_connection_costs_an_attempt_and_sets_the_worker_aside(happened):
    rig = Rig(entry("a", slots=2), entry("b"))
    c = rig.call(retries=1)
    rig.d.batch_failed(rig.link("a"), rig.last("a"), happened, "gone")
    assert rig.d.records["a"].state == SUSPECT and rig.link("a").aborted == 1
    assert rig.last("b").calls == [c] and c.attempts == 2
    rig.d.batch_failed(rig.link("b"), rig.last("b"), happened, "gone too")
    with pytest.raises(WorkerUnavailable, match="gave up after 2 attempt"):
        c.future.result(0)


def test_silent_probe_takes_back_every_call_on_the_worker_with_an_attempt():
    rig = Rig(entry("a", slots=2), entry("b", slots=2))
    c1, c2 = rig.call(), rig.call()
    on_a = [c for b in rig.link("a").sent for c in b.calls]
    rig.d.probe_failed(rig.link("a"), "stopped answering")
    assert rig.d.records["a"].state == SUSPECT
    assert all(c.attempts == 2 for c in on_a) and {c1, c2} <= {c for b in rig.link("b").sent for c in b.calls}
    rig.d.probe_answered(rig.link("a"), {"slots": 2, "running": 0, "queued": 0})
    assert rig.d.records["a"].state == READY


def test_task_raised_fails_the_call_and_keeps_the_worker():
    rig = Rig(entry("a"))
    c = rig.call("fail", "boom")
    rig.reply("a", rig.last("a"), [err(protocol.ERROR)])
    with pytest.raises(TaskFailed) as failed:
        c.future.result(0)
    assert (failed.value.type, failed.value.message, failed.value.traceback) == ("RuntimeError", "boom", "tb")
    assert rig.d.records["a"].state == READY


def test_task_raised_is_retried_with_retry_on_error():
    rig = Rig(entry("a"))
    c = rig.call("fail", "boom", retries=1, retry_on_error=True)
    rig.reply("a", rig.last("a"), [err(protocol.ERROR)])
    assert c.attempts == 2 and not c.done
    rig.reply("a", rig.last("a"), [err(protocol.ERROR)])
    with pytest.raises(TaskFailed):
        c.future.result(0)


def test_task_overran_ends_as_task_timeout_at_once_with_attempts_left():
    rig = Rig(entry("a"))
    c = rig.call("sleep", 30, retries=3)
    rig.reply("a", rig.last("a"), [err(protocol.TIMEOUT, "TaskTimeout", "over 10 s")])
    with pytest.raises(TaskTimeout):
        c.future.result(0)
    assert c.attempts == 1 and rig.d.records["a"].state == READY


def test_task_overran_is_retried_with_retry_on_error_then_ends_as_task_timeout():
    rig = Rig(entry("a"))
    c = rig.call("sleep", 30, retries=1, retry_on_error=True)
    rig.reply("a", rig.last("a"), [err(protocol.TIMEOUT, "TaskTimeout", "over 10 s")])
    assert c.attempts == 2 and rig.d.records["a"].state == READY
    rig.reply("a", rig.last("a"), [err(protocol.TIMEOUT, "TaskTimeout", "over 10 s")])
    with pytest.raises(TaskTimeout):
        c.future.result(0)


@pytest.mark.parametrize("kind", [protocol.CRASHED, protocol.TRANSIENT])
def test_crashed_slot_or_transient_failure_costs_an_attempt_and_keeps_the_worker(kind):
    rig = Rig(entry("a"))
    c = rig.call(retries=0)
    rig.reply("a", rig.last("a"), [err(kind, "ProcessDied", "slot died")])
    with pytest.raises(WorkerUnavailable, match="slot died"):
        c.future.result(0)
    assert rig.d.records["a"].state == READY


def test_not_run_requeues_without_an_attempt_and_batch_mates_keep_their_results():
    rig = Rig(entry("a"), max_batch=3)
    rig.d.records["a"].sizers["compute"].size = 3
    rig.d.records["a"].in_flight["compute"] = 1  # hold the slot while the three calls queue
    c1, c2, c3 = rig.call(), rig.call(), rig.call()
    rig.d.records["a"].in_flight["compute"] = 0
    rig.d.submit([])
    batch = rig.last("a")
    assert batch.calls == [c1, c2, c3]
    rig.reply("a", batch, [ok(3), err(protocol.TIMEOUT, "TaskTimeout"), [protocol.NOT_RUN, None, 0.0]])
    assert c1.future.result(0) == 3 and c1.attempts == 1
    with pytest.raises(TaskTimeout):  # its own overrun ends it; the batch-mates are untouched
        c2.future.result(0)
    assert c3.attempts == 1 and not c3.done  # never ran: sent again at no cost
    assert rig.last("a").calls == [c3]


def test_not_runnable_here_reroutes_without_an_attempt_and_drops_the_task_from_that_catalog():
    rig = Rig(entry("a", slots=2), entry("b"))
    c = rig.call()
    rig.reply("a", rig.last("a"), [err(protocol.UNKNOWN_TASK, "UnknownTask", "unknown task 'add'")])
    assert rig.last("b").calls == [c] and c.attempts == 1
    rig.call()  # a's catalog no longer lists add: the next one waits for b
    assert len(rig.link("a").sent) == 1


def test_calls_go_only_to_workers_whose_catalog_offers_the_task():
    rig = Rig(entry("a", slots=4), entry("g", tasks=BUILTIN | {"compress_ratio"}))
    c = rig.call("compress_ratio", "x")
    assert rig.last("g").calls == [c] and not rig.link("a").sent


def test_decode_failure_fails_that_call_alone_and_not_the_worker():
    rig = Rig(entry("a"), max_batch=2)
    rig.d.records["a"].sizers["compute"].size = 2
    rig.d.records["a"].in_flight["compute"] = 1
    c1, c2 = rig.call(), rig.call()
    rig.d.records["a"].in_flight["compute"] = 0
    rig.d.submit([])
    rig.reply("a", rig.last("a"), [[protocol.OK, b"\xc1garbage", 1.0], ok(3)])
    with pytest.raises(TaskFailed) as failed:
        c1.future.result(0)
    assert failed.value.type == "DecodeError" and c1.attempts == 1  # it ran once; it is not run again
    assert c2.future.result(0) == 3 and rig.d.records["a"].state == READY


def test_too_large_splits_the_batch_then_fails_a_lone_call_and_never_the_worker():
    rig = Rig(entry("a"), max_batch=2)
    rig.d.records["a"].sizers["compute"].size = 2
    rig.d.records["a"].in_flight["compute"] = 1
    c1, c2 = rig.call(), rig.call()
    rig.d.records["a"].in_flight["compute"] = 0
    rig.d.submit([])
    rig.d.batch_failed(rig.link("a"), rig.last("a"), Happened.TOO_LARGE, "SerializeError")
    assert rig.last("a").calls == [c1] and c1.attempts == 1 and c2.attempts == 0
    rig.d.batch_failed(rig.link("a"), rig.last("a"), Happened.TOO_LARGE, "SerializeError")
    with pytest.raises(TaskFailed, match="ArgumentsTooLarge"):
        c1.future.result(0)
    assert rig.d.records["a"].state == READY and rig.last("a").calls == [c2]


def test_arguments_over_the_cap_or_unsendable_fail_at_submission():
    rig = Rig(entry("a"))
    rig.d.max_call_bytes = 100
    big = rig.call("echo", "x" * 200)
    with pytest.raises(TaskFailed, match="ArgumentsTooLarge"):
        big.future.result(0)
    odd = rig.call("echo", {"when": object()})
    with pytest.raises(TaskFailed, match=r"args\[0\]\['when'\]: object"):
        odd.future.result(0)
    assert not rig.link("a").sent


def test_bad_reply_fails_the_calls_with_invalid_reply():
    rig = Rig(entry("a"))
    c = rig.call()
    rig.raw_reply("a", rig.last("a"), ["not", "a", "reply"])
    with pytest.raises(TaskFailed, match="InvalidReply"):
        c.future.result(0)


def test_cancelled_outcome_ends_the_call_cancelled():
    rig = Rig(entry("a"))
    c = rig.call("sleep", 30)
    rig.reply("a", rig.last("a"), [[protocol.CANCELLED, None, 0.0]])
    with pytest.raises(CancelledError):
        c.future.result(0)


def test_tagged_calls_take_turns_with_an_untagged_backlog():
    rig = Rig(entry("plain"), entry("gpu", tags="gpu"))
    backlog = [rig.call() for _ in range(20)]
    tagged = [rig.call(tags="gpu") for _ in range(3)]
    for _ in range(6):  # answer whatever gpu runs, in turn
        batch = rig.last("gpu")
        rig.reply("gpu", batch, [ok(0)])
    assert all(c.done for c in tagged), "tagged calls must not wait behind the untagged backlog"
    assert sum(c.done for c in backlog) <= 4


def test_higher_priority_goes_first():
    rig = Rig(entry("a"))
    rig.call("sleep", 1)  # takes the slot
    low = rig.call(priority=0)
    high = rig.call(priority=5)
    rig.reply("a", rig.last("a"), [ok(1)])
    assert rig.last("a").calls == [high] and not low.done


def test_no_slot_within_wait_expires_but_a_busy_candidate_keeps_calls_waiting():
    rig = Rig(entry("a"), wait_s=5)
    first = rig.call("sleep", 60)
    second = rig.call()
    rig.clock.now += 6
    assert rig.d.expire_waiting() == []  # our own work holds the slot: it will free
    rig.d.probe_failed(rig.link("a"), "silent")  # now no live worker at all
    rig.clock.now += 6
    expired = rig.d.expire_waiting()
    assert {c for c, _, _ in expired} == {first, second}
    assert "waited 5 s" in str(expired[0][2])


def test_close_settles_each_call_once():
    rig = Rig(entry("a"))
    seen: list[Call] = []

    class Waiter:
        def settled(self, calls: list[Call]) -> None:
            seen.extend(calls)

    calls = [Call("compute", "add", [1, 2], {}, frozenset(), 10.0, 1, False, Waiter()) for _ in range(3)]
    rig.d.submit(calls)
    rig.d.close()
    assert sorted(id(c) for c in seen) == sorted(id(c) for c in calls)


def test_cancel_waiting_calls_never_run_and_running_ones_are_stopped_on_their_worker():
    rig = Rig(entry("a"))
    running = rig.call("sleep", 30)
    waiting = rig.call()
    assert waiting.future.cancel() is True and waiting.future.cancelled()
    assert running.future.cancel() is False  # concurrent.futures: a started call is not cancelled
    assert rig.d.cancel([running]) == [running]
    assert rig.link("a").cancelled == [[str(running.id)]]
    with pytest.raises(CancelledError):
        running.future.result(0)
    # The worker's late answer changes nothing; the cancelled waiting call is never sent.
    rig.reply("a", rig.last("a"), [[protocol.CANCELLED, None, 0.0]])
    assert [c for b in rig.link("a").sent for c in b.calls] == [running]
    assert rig.d.cancel([running]) == []


def test_cancelling_a_job_finds_its_calls_wherever_they_are():
    rig = Rig(entry("a"))

    class Job:
        def settled(self, calls: list[Call]) -> None:
            pass

    job = Job()
    calls = [Call("compute", "add", [1, 2], {}, frozenset(), 10.0, 1, False, job) for _ in range(3)]
    rig.d.submit(calls)
    assert set(rig.d.calls_of(job)) == set(calls)
    assert len(rig.d.cancel(rig.d.calls_of(job))) == 3 and rig.d.calls_of(job) == []


def test_calls_spread_over_free_slots_and_queue_at_shared_workers_up_to_two_batches_per_slot():
    rig = Rig(entry("a", slots=2), entry("b", slots=2), max_batch=100)
    for rec in rig.d.records.values():
        rec.sizers["compute"].size = 100
    first = [Call("compute", "add", [1, 2], {}, frozenset(), 10.0, 2, False) for _ in range(40)]
    rig.d.submit(first)
    sent = rig.link("a").sent + rig.link("b").sent
    assert sorted(len(b.calls) for b in sent) == [10, 10, 10, 10]  # four free slots, not 8 places
    for name in "ab":  # another coordinator shows up on both: queue there, up to our allowance
        rig.d.probe_answered(rig.link(name), {"slots": 2, "running": 2, "queued": 1})
    more = [Call("compute", "add", [1, 2], {}, frozenset(), 10.0, 2, False) for _ in range(500)]
    rig.d.submit(more)
    assert [len(rig.link(w).sent) for w in "ab"] == [HELD_PER_SLOT * 2, HELD_PER_SLOT * 2]
    assert rig.d.in_flight() == 40 + 4 * 100  # the last 100 wait here for a reply


def crawler(name: str, slots: int) -> WorkerEntry:
    uris = {"crawl": f"PYRO:w@127.0.0.1:1/{name}", "control": f"PYRO:k@127.0.0.1:1/{name}"}
    return WorkerEntry(name, uris, {"crawl": slots}, frozenset(), frozenset())


def fetches(n: int) -> list[Call]:
    return [
        Call("crawl", "fetch", [f"http://127.0.0.1/{i}"], {}, frozenset(), 10.0, 0, False) for i in range(n)
    ]


def test_fetches_go_to_a_worker_together_not_one_per_free_slot():
    rig = Rig(crawler("a", 16), crawler("b", 16), max_batch=100)
    rig.d.submit(fetches(10))
    sent = rig.link("a").sent + rig.link("b").sent
    assert sorted(len(b.calls) for b in sent) == [2, 4, 4]  # a quarter of a worker's slots at most
    assert rig.link("a").sent and rig.link("b").sent  # still over both workers
    off = Rig(crawler("a", 16), max_batch=1)  # batching turned off
    off.d.submit(fetches(3))
    assert [len(b.calls) for b in off.link("a").sent] == [1, 1, 1]


def overdue_now(rig: Rig) -> list[Any]:
    with rig.d._cond:  # as the dispatch loop calls it
        return rig.d.expire_overdue()


def test_a_batch_past_its_deadline_counts_as_timed_out_though_its_worker_answers_probes():
    rig = Rig(entry("a"), entry("b"))
    c = rig.call(retries=1)  # timeout 10 s: deadline 10 + 1 + 10 s after sending
    worker = "a" if rig.link("a").sent else "b"
    rig.d.probe_answered(rig.link(worker), {"slots": 1, "running": 1, "queued": 0})
    rig.clock.now += 20.9
    assert overdue_now(rig) == [] and c.batch_id != 0
    rig.clock.now += 0.2
    assert overdue_now(rig) == []  # re-queued (an attempt left), not ended
    rig.d.submit([])
    other = "b" if worker == "a" else "a"
    assert rig.d.records[worker].state == SUSPECT and rig.link(worker).aborted == 1
    assert rig.last(other).calls == [c] and c.attempts == 2


def test_a_batch_deadline_moves_on_while_the_worker_holds_others_work_but_not_for_ever():
    rig = Rig(entry("a", slots=1))
    c = rig.call(retries=0)
    rig.d.records["a"].observe_load({"slots": 1, "running": 2, "queued": 1})  # work of others there
    for _ in range(overdue.QUEUE_SPANS):
        rig.clock.now += 21.1
        assert overdue_now(rig) == []
    rig.clock.now += 21.1
    (ended,) = overdue_now(rig)
    assert ended[0] is c and isinstance(ended[2], WorkerUnavailable)
    assert "no reply to a batch within its deadline" in str(ended[2])
