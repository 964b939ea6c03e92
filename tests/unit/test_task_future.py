"""A lone call's future reads its reply on the waiting thread, and the wire may settle it meanwhile."""

from __future__ import annotations

from typing import Any

from pyrocluster.coordinator.calls import Call, TaskFuture, settle


def call() -> Call:
    return Call("compute", "add", [1, 2], {}, frozenset(), 5.0, 0, False)


class SettledWhileLooking(TaskFuture):
    """The wire thread settles the call just as the waiting thread looks at its reader."""

    def _pending(self) -> bool:
        if self.reader is not None and super()._pending():
            settle([(self.call, 3, None)])  # the wire read the reply first: the reader is gone
            return True  # what the waiting thread saw a moment before
        return super()._pending()


def test_a_call_settled_by_the_wire_while_its_waiter_takes_the_reader_returns_its_result() -> None:
    c = call()
    future = SettledWhileLooking(c)
    c.waiter = future
    seen: list[float] = []

    def reader(wait_s: float) -> bool:
        seen.append(wait_s)
        return False

    future.reader = reader
    assert future.result(timeout=1) == 3


def test_a_reader_that_reads_the_reply_settles_the_future() -> None:
    c = call()
    future = c.future

    def reader(wait_s: float) -> Any:
        settle([(c, 3, None)])
        return True

    future.reader = reader
    assert future.result(timeout=1) == 3 and future.reader is None


def test_a_future_is_running_while_its_call_is_on_a_worker() -> None:
    c = call()
    future = c.future
    assert not future.running() and not future.done()
    c.batch_id = 7  # sent to a worker in batch 7
    assert future.running()
    settle([(c, 3, None)])
    assert not future.running() and future.result(timeout=1) == 3
