"""Futures as arguments on real workers: values across levels, UpstreamFailed, no thread per waiting call."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from pyrocluster import Cluster, TaskFailed, UpstreamFailed, WorkerUnavailable
from tests.conftest import running_cluster


@pytest.fixture(scope="module")
def two_workers_ns() -> Iterator[str]:
    """Two two-slot workers, shared by the module's tests that only submit and read results."""
    worker = ["--services", "compute", "--concurrency", "2"]
    with running_cluster(worker, worker) as ns:
        yield ns


def test_futures_as_arguments_across_three_levels_and_upstream_failure(two_workers_ns):
    with Cluster(two_workers_ns, wait=20) as cluster:
        a = cluster.submit("add", 1, 2)
        b = cluster.submit("add", a, 10)  # positional
        c = cluster.submit("add", a, b=a)  # keyword, and the same future twice
        d = cluster.submit("add", b, c)
        assert d.result(timeout=30) == 13 + 6
        root = cluster.submit("fail", "root broke")
        child = cluster.submit("add", root, 1)
        grandchild = cluster.submit("add", 1, b=child)
        with pytest.raises(TaskFailed):
            root.result(timeout=30)
        with pytest.raises(UpstreamFailed) as info:
            child.result(timeout=30)
        assert info.value.upstream == "fail" and "root broke" in str(info.value)
        assert isinstance(info.value.cause, TaskFailed)
        with pytest.raises(UpstreamFailed) as info:
            grandchild.result(timeout=30)
        assert info.value.upstream == "add" and "root broke" in str(info.value)
        waiting = cluster.submit("add", cluster.submit("sleep", 0.5), 1)
        assert waiting.cancel() and waiting.cancelled()  # never ran: cancel() keeps its meaning


def test_a_call_on_a_finished_future_after_close_fails_at_once(two_workers_ns):
    cluster = Cluster(two_workers_ns, wait=20)
    upstream = cluster.submit("add", 1, 2)
    assert upstream.result(timeout=30) == 3
    cluster.close()
    dependent = cluster.submit("echo", upstream)  # its upstream is already done: submitted at once
    with pytest.raises(WorkerUnavailable):
        dependent.result(timeout=5)


def test_a_big_result_left_unread_until_after_close_says_it_was_freed(two_workers_ns):
    """A result over 1 MiB waits on its worker and is freed at close: reading it afterwards says
    so, not only "the cluster is closed" of a future that reported done without error."""
    cluster = Cluster(two_workers_ns, wait=20)
    small, big = cluster.submit("echo", "s"), cluster.submit("echo", "x" * (2 << 20))
    assert big.exception(timeout=30) is None and small.exception(timeout=30) is None
    cluster.close()
    assert small.result(timeout=5) == "s"
    with pytest.raises(
        WorkerUnavailable, match=r"'echo' result of \d+ bytes was kept on its worker and freed"
    ):
        big.result(timeout=5)


def test_a_done_callback_that_submits_and_waits_holds_up_nothing(two_workers_ns):
    """Run where the outcome was set (the coordinator's loop), such a callback never saw its own
    call come back, and its workers were set aside as silent meanwhile."""
    with Cluster(two_workers_ns, wait=20) as cluster:
        inner: list[object] = []
        done = threading.Event()

        def chain(future):
            inner.append(cluster.submit("add", future.result(), 1).result(timeout=10))
            done.set()

        for _ in range(3):  # lone calls, read by the loop and by the waiting thread alike
            done.clear()
            first = cluster.submit("add", 1, 2)
            first.add_done_callback(chain)
            assert first.result(timeout=10) == 3
            assert done.wait(10), "the callback's own call never came back"
        assert inner == [4, 4, 4]
        seen: list[int] = []
        finished = cluster.submit("add", 2, 2)
        finished.result(timeout=10)
        finished.add_done_callback(lambda f: seen.append(threading.get_ident()))
        assert seen == [threading.get_ident()]  # added when done: called at once, here


@pytest.mark.slow
def test_a_chain_of_10000_dependent_calls_holds_no_thread_per_waiting_call(nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--concurrency", "2", "--pool", "thread")
    with Cluster(nameserver, wait=20) as cluster:
        gate = cluster.submit("sleep", 0.5)  # holds the chain back while it is built
        before = threading.active_count()
        future = cluster.submit("add", gate, 0)
        for _ in range(10_000):
            future = cluster.submit("add", future, 1)
        assert not future.done()  # thousands of calls wait now...
        assert threading.active_count() <= before + 2  # ...and cost no thread
        assert future.result(timeout=240) == 0.5 + 10_000
