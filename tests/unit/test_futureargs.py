"""Futures as arguments without a cluster: substitution, failure naming the upstream, no recursion, cancel."""

from __future__ import annotations

import logging

import pytest

from pyrocluster.coordinator.calls import Call
from pyrocluster.coordinator.futureargs import submit_after, upstream_futures
from pyrocluster.errors import TaskFailed, UpstreamFailed, WorkerUnavailable


def call(name: str, *args: object, **kwargs: object) -> Call:
    return Call("compute", name, list(args), dict(kwargs), frozenset(), 1.0, 0, False)


def test_the_call_is_submitted_once_every_upstream_succeeded_with_their_results():
    a, b = call("a"), call("b")
    c = call("add", a.future, 1, x=b.future, y=a.future)
    submitted: list[Call] = []
    ups = upstream_futures(c.args, c.kwargs)
    assert ups == [a.future, b.future]
    submit_after(c, ups, submitted.extend)
    a.future.set_result(10)
    assert submitted == []
    b.future.set_result(20)
    assert submitted == [c] and c.args == [10, 1] and c.kwargs == {"x": 20, "y": 10}


def test_a_failed_upstream_fails_the_chain_without_recursion(caplog: pytest.LogCaptureFixture):
    root = call("fail")
    chain = [root]
    for _ in range(5000):
        nxt = call("add", chain[-1].future, 1)
        submit_after(nxt, [chain[-1].future], lambda calls: pytest.fail("must not run"))
        chain.append(nxt)
    with caplog.at_level(logging.ERROR):
        root.future.set_exception(TaskFailed("RuntimeError", "boom"))
    assert not caplog.records  # concurrent.futures logs a callback that raised (RecursionError)
    first = chain[1].future.exception()
    assert isinstance(first, UpstreamFailed) and first.upstream == "fail" and "boom" in str(first)
    last = chain[-1].future.exception()
    assert isinstance(last, UpstreamFailed) and last.upstream == "add" and "boom" in str(last)


def test_a_cancelled_waiting_call_never_runs_and_a_cancelled_upstream_fails_its_dependents():
    up = call("sleep")
    waiting = call("add", up.future, 1)
    submit_after(waiting, [up.future], lambda calls: pytest.fail("must not run"))
    assert waiting.future.cancel()
    up.future.set_result(1)
    up2 = call("sleep")
    dep = call("add", up2.future, 1)
    submit_after(dep, [up2.future], lambda calls: pytest.fail("must not run"))
    assert up2.future.cancel()
    assert isinstance(dep.future.exception(), UpstreamFailed)


def test_a_call_whose_upstream_completes_after_the_cluster_closed_fails_instead_of_hanging():
    up = call("a")
    dependent = call("echo", up.future)

    def closed(calls: list[Call]) -> None:
        raise WorkerUnavailable("the cluster is closed")

    submit_after(dependent, [up.future], closed)
    up.future.set_result(1)
    assert isinstance(dependent.future.exception(timeout=1), WorkerUnavailable)
