"""A lone call's future asks the wire to watch its reply as soon as anything may wait for it
without reading it, and only then (``coordinator/readhere.py``)."""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from pyrocluster.coordinator.readhere import ReadHere


def sent(reads: list[float] | None = None) -> tuple[ReadHere, list[int]]:
    """A future whose call went out alone and unwatched; the list counts the watch requests."""
    future = ReadHere()
    watched: list[int] = []

    def reader(wait_s: float) -> bool:
        if reads is not None:
            reads.append(wait_s)
        future.ended()
        future.set_result(3)
        return True

    future.sent(reader, lambda: watched.append(1))
    return future, watched


WAYS_TO_WAIT: dict[str, Callable[[ReadHere], Any]] = {
    "done": lambda f: f.done(),
    "add_done_callback": lambda f: f.add_done_callback(lambda _: None),
    "wait": lambda f: concurrent.futures.wait([f], timeout=0),
    "as_completed": lambda f: list(concurrent.futures.as_completed([f], timeout=0.01)),
}


@pytest.mark.parametrize("way", list(WAYS_TO_WAIT))
def test_waiting_without_reading_asks_the_wire_to_watch_once(way: str) -> None:
    future, watched = sent()
    times_out = way == "as_completed"  # nothing reads the reply in this test
    with pytest.raises(concurrent.futures.TimeoutError) if times_out else contextlib.nullcontext():
        WAYS_TO_WAIT[way](future)
    assert watched == [1]
    future.done()
    concurrent.futures.wait([future], timeout=0)
    assert watched == [1], "asked once"
    assert future.result(1) == 3, "the reader still reads it"


def test_result_and_exception_read_the_reply_without_asking_to_watch() -> None:
    reads: list[float] = []
    future, watched = sent(reads)
    assert future.result(5) == 3 and len(reads) == 1 and 0 < reads[0] <= 5
    future, watched = sent(reads)
    assert future.exception(5) is None and len(reads) == 2
    assert watched == []


def test_a_settled_future_asks_nothing() -> None:
    future, watched = sent()
    future.ended()
    future.set_result(4)
    future.add_done_callback(lambda _: None)
    assert future.done() and concurrent.futures.wait([future]).done == {future}
    assert watched == []
