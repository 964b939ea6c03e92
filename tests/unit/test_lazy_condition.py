"""A future whose Condition is made on first use (``coordinator/lazycondition.py``) behaves as a
``concurrent.futures.Future``: waiters are woken, callbacks run, ``wait`` and ``as_completed``
see it, whichever comes first, the outcome or the one who waits for it."""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, InvalidStateError, as_completed, wait
from typing import Any

import pytest

from pyrocluster.coordinator.calls import Call, TaskFuture, settle
from pyrocluster.coordinator.lazycondition import LazyConditionFuture

pytestmark = pytest.mark.timeout(30)


def until(condition: Any) -> None:
    """Poll ``condition`` (bounded by the test's timeout)."""
    while not condition():
        time.sleep(0.001)


def waiting_on(future: LazyConditionFuture) -> bool:
    """True once some thread waits on the future's Condition."""
    condition = future.__dict__.get("_condition")
    return condition is not None and bool(condition._waiters)


def test_an_outcome_set_before_anyone_waits_needs_no_condition_and_is_seen_by_everything_after() -> None:
    f = LazyConditionFuture()
    f.set_result(3)
    assert "_condition" not in f.__dict__
    assert f.result() == 3 and f.result(0) == 3 and f.exception() is None and f.done()
    called: list[Any] = []
    f.add_done_callback(called.append)
    assert called == [f]
    done, not_done = wait([f], timeout=5)
    assert done == {f} and not not_done
    assert list(as_completed([f], timeout=5)) == [f]


def test_a_thread_waiting_in_result_is_woken_by_the_result_set_from_another_thread() -> None:
    f = LazyConditionFuture()
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(f.result(timeout=20)))
    waiter.start()
    until(lambda: waiting_on(f))
    f.set_result("late")
    waiter.join(20)
    assert got == ["late"]


def test_wait_and_as_completed_are_woken_by_an_outcome_set_later() -> None:
    f, g = LazyConditionFuture(), LazyConditionFuture()
    done: list[Any] = []
    waiter = threading.Thread(target=lambda: done.append(wait([f, g], 20, FIRST_COMPLETED)))
    waiter.start()
    until(lambda: f.__dict__.get("_condition") is not None and bool(f._waiters))
    g.set_exception(ValueError("boom"))
    waiter.join(20)
    assert done[0].done == {g}
    seen: list[Any] = []
    waiter = threading.Thread(target=lambda: seen.extend(as_completed([f], timeout=20)))
    waiter.start()
    until(lambda: bool(f._waiters))  # wait took its waiter back when it returned
    f.set_result(1)
    waiter.join(20)
    assert seen == [f]


def test_a_done_callback_added_before_the_outcome_runs_once_when_it_is_set() -> None:
    f = LazyConditionFuture()
    called: list[Any] = []
    f.add_done_callback(called.append)
    f.set_result(3)
    assert called == [f] and f.result() == 3


def test_an_exception_set_without_a_condition_is_raised_by_result() -> None:
    f = LazyConditionFuture()
    f.set_exception(KeyError("k"))
    assert "_condition" not in f.__dict__
    assert isinstance(f.exception(), KeyError)
    with pytest.raises(KeyError):
        f.result()


def test_a_second_outcome_is_refused_whether_or_not_a_condition_was_made() -> None:
    f = LazyConditionFuture()
    f.set_result(1)
    with pytest.raises(InvalidStateError):
        f.set_result(2)
    with pytest.raises(InvalidStateError):
        f.set_exception(ValueError())
    assert f.result() == 1
    g = LazyConditionFuture()
    assert g.cancel()
    with pytest.raises(InvalidStateError):
        g.set_result(2)


def test_another_missing_attribute_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        LazyConditionFuture().no_such_thing  # noqa: B018


def test_a_calls_future_settled_from_another_thread_wakes_a_thread_in_result() -> None:
    c = Call("compute", "add", [1, 2], {}, frozenset(), 5.0, 0, False)
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(c.future.result(timeout=20)))
    waiter.start()
    until(lambda: waiting_on(c.future))
    settle([(c, 3, None)])
    waiter.join(20)
    assert got == [3] and isinstance(c.future, TaskFuture)
