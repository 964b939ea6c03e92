"""A slot process's flat batch loop gives the outcomes ``BatchRun`` gives the same calls, logs
each one as it ends, skips flagged calls and arms the timer only for an earlier deadline.

Driven in this process against a real :class:`SlotShare`; the timer is a stand-in that records
what it is asked to arm (the real one takes SIGALRM, which pytest-timeout uses here)."""

from __future__ import annotations

import math
import multiprocessing
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.helpers.testtasks  # noqa: F401 - registers ``unsendable`` among others
from pyrocluster import codec, protocol
from pyrocluster.slots.batch import OUTCOME_OVERHEAD_BYTES, BatchRun, Budget, ended_outcomes
from pyrocluster.slots.inline_batch import run_logged, run_lone
from pyrocluster.slots.share import SlotShare


class Timer:
    """What ``run_logged`` uses of a ``CallTimer``: when it goes off, and arming it."""

    def __init__(self) -> None:
        self.fires_at = math.inf
        self.armed: list[float] = []

    def arm(self, at: float) -> None:
        self.fires_at = at
        self.armed.append(at)


def call(name: str, *args: Any, timeout: float = 10.0, **kwargs: Any) -> list[Any]:
    return [name, codec.pack_call(args, kwargs), timeout]


CALLS = [
    call("add", 1, 2),
    call("add", "a", "b"),
    call("add", a=[1], b=[2]),
    call("echo", "x" * 2_000),
    call("echo", {1: {2: 3}}),
    call("fail", "boom"),
    call("nope"),
    call("unsendable"),
    call("add", 1),  # TypeError in the task
    ["add", b"\xc1", 10.0],  # not msgpack
    ["add", codec.pack([1, 2, 3]), 10.0],  # not [args, kwargs]
    ["add", codec.pack([[1], {3: 4}]), 10.0],  # a kwargs key not a string
    ["echo", codec.pack([["y" * 5_000], {}]), 10.0],  # a long payload: decoded as its call starts
]


def run_both(calls: list[list[Any]], budget: Budget, skip: set[int]) -> tuple[list[Any], list[Any], Timer]:
    """``(BatchRun's outcomes, the flat loop's as the worker reads them, its timer)``."""
    run = BatchRun([list(c) for c in calls], budget, skip=skip)
    run.run()
    share = SlotShare(multiprocessing.get_context("spawn"), max_calls=len(calls) + 1, log_bytes=1 << 20)
    try:
        share.reset()
        share.flag(skip)
        share.restart()
        timer = Timer()
        run_logged([list(c) for c in calls], budget, share, timer, {})  # type: ignore[arg-type]
        logged = ended_outcomes(share.finished(), len(calls), skip)
    finally:
        share.close()
    return run.outcomes, logged, timer


def comparable(outcome: list[Any]) -> tuple[Any, ...]:
    """An outcome without its duration, and a failure without the frames above the task's."""
    kind, value, _ms = outcome
    value = None if value is None else codec.unpack(value)
    if isinstance(value, dict) and "traceback" in value:
        value = {**value, "traceback": value["traceback"].splitlines()[-1:]}
    return kind, repr(value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(range(len(CALLS))), min_size=1, max_size=10),
    st.sets(st.integers(min_value=0, max_value=9)),
    st.sampled_from([10**6, 3 * (2_000 + OUTCOME_OVERHEAD_BYTES), 500]),
    st.sampled_from([10**6, 1_500]),
)
def test_the_flat_loop_gives_what_batch_run_gives(
    picks: list[int], skip: set[int], room: int, cap: int
) -> None:
    calls = [CALLS[p] for p in picks]
    skip = {j for j in skip if j < len(calls)}
    expected, logged, _timer = run_both(calls, Budget(room, cap), skip)
    assert [comparable(o) for o in logged] == [comparable(o) for o in expected]


def test_each_kind_of_call_fails_alone_and_the_rest_run() -> None:
    expected, logged, _timer = run_both(CALLS, Budget(10**6, 10**6), set())
    kinds = [o[0] for o in logged]
    ok, err = protocol.OK, protocol.ERROR
    assert kinds == [ok, ok, ok, ok, ok, err, protocol.UNKNOWN_TASK, err, err, err, err, err, ok]
    assert codec.unpack(logged[7][1])["type"] == "NotSendable"
    assert [comparable(o) for o in logged] == [comparable(o) for o in expected]


def test_a_flagged_call_is_skipped_and_a_full_reply_sends_the_rest_back() -> None:
    calls = [call("echo", "z" * 1_000) for _ in range(5)]
    budget = Budget(3 * (len(codec.pack("z" * 1_000)) + OUTCOME_OVERHEAD_BYTES), 10**6)
    _expected, logged, _timer = run_both(calls, budget, {1})
    kinds = [o[0] for o in logged]
    assert kinds == [protocol.OK, protocol.CANCELLED, protocol.OK, protocol.OK, protocol.NOT_RUN]


def test_the_timer_is_armed_again_only_for_an_earlier_deadline() -> None:
    calls = [call("add", i, i, timeout=10.0) for i in range(5)]
    calls[3][2] = 0.5
    *_, timer = run_both(calls, Budget(10**6, 10**6), set())
    assert len(timer.armed) == 2, "once for the first call, once for the shorter timeout"
    assert timer.armed[1] < timer.armed[0]


def test_a_lone_direct_call_gives_what_a_batch_of_one_gives_and_is_logged() -> None:
    """``run_lone`` (a direct call, claimed first) against the flat loop on a batch of one, for
    every kind of call, with a value cap that fails the long ones."""
    for cap in (10**6, 1_500):
        for c in CALLS:
            _expected, (batch_of_one,), _timer = run_both([c], Budget(500, cap), set())
            share = SlotShare(multiprocessing.get_context("spawn"), max_calls=2, log_bytes=1 << 20)
            try:
                share.lend(True)
                assert share.claim(["coord", "1", str(c[0])], c[2], 100.0)
                timer = Timer()
                outcome = run_lone(list(c), cap, share, timer, 100.0)  # type: ignore[arg-type]
                assert comparable(outcome) == comparable(batch_of_one), c[0]
                assert [comparable(o) for o in share.finished()] == [comparable(outcome)], "logged"
                assert timer.armed == [100.0 + c[2]]
            finally:
                share.close()
