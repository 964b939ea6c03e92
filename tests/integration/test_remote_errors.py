"""A task's exception keeps its type on the caller's side, with the remote traceback in its text."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest

from pyrocluster import Cluster, TaskFailed, UpstreamFailed, register_error

ERROR_TASKS = str(Path(__file__).parents[1] / "helpers" / "errortasks.py")


class QuotaExceeded(Exception):
    """Stands for the exception class a user's tasks module defines and the caller imports."""


def test_a_remote_builtin_exception_is_caught_by_its_own_type_and_by_task_failed(nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--concurrency", "1", "--tasks", ERROR_TASKS)
    with Cluster(nameserver, wait=20) as cluster:
        with pytest.raises(ZeroDivisionError) as caught:
            cluster.submit("divide", 1, 0).result(timeout=30)
        error = caught.value
        assert isinstance(error, TaskFailed) and error.type == "ZeroDivisionError"
        assert error.message == "division by zero"
        assert "in divide" in str(error) and "return a / b" in str(error)  # the remote frame
        with pytest.raises(TaskFailed):
            cluster.submit("divide", 1, 0).result(timeout=30)
        with pytest.raises(KeyError):
            cluster.submit("lookup", {"a": 1}, "b").result(timeout=30)
        register_error(QuotaExceeded)
        with pytest.raises(QuotaExceeded):
            cluster.submit("raise_named", "QuotaExceeded", "over quota").result(timeout=30)
        with pytest.raises(TaskFailed) as unknown:  # not registered here: TaskFailed alone
            cluster.submit("raise_named", "NotKnownHere", "odd").result(timeout=30)
        assert type(unknown.value) is TaskFailed and unknown.value.type == "NotKnownHere"
        with pytest.raises(UpstreamFailed) as upstream:
            cluster.submit("add", cluster.submit("divide", 1, 0), 1).result(timeout=30)
        assert "ZeroDivisionError: division by zero" in str(upstream.value)


def test_a_unicode_error_keeps_its_type(nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--concurrency", "1", "--tasks", ERROR_TASKS)
    with Cluster(nameserver, wait=20) as cluster:
        with pytest.raises(UnicodeDecodeError) as caught:
            cluster.submit("decode", b"\xff").result(timeout=30)
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, TaskFailed)
        assert caught.value.type == "UnicodeDecodeError" and "invalid start byte" in caught.value.message


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_a_task_raising_system_exit_or_keyboard_interrupt_fails_that_call_once(
    nameserver, worker_factory, tmp_path, pool
):
    """The task's own SystemExit or KeyboardInterrupt is its error: not a dead slot process run
    again on the next attempt (its side effects repeated), not a thread slot that never answers."""
    worker_factory(1, "--services", "compute", "--concurrency", "1", "--pool", pool, "--tasks", ERROR_TASKS)
    with Cluster(nameserver, wait=20, retries=3) as cluster:
        for how, name in (("exit", "SystemExit"), ("interrupt", "KeyboardInterrupt")):
            log = tmp_path / f"{how}.log"
            future = cluster.options(timeout=20).submit("leave", str(log), how)
            with pytest.raises(TaskFailed) as caught:
                future.result(timeout=15)
            assert type(caught.value) is TaskFailed and caught.value.type == name
            assert future.attempts == 1 and log.read_text() == "ran\n"
        assert cluster.submit("add", 1, 2).result(timeout=30) == 3  # the slot serves on


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_an_exception_without_sendable_text_still_fails_its_call_with_its_type(
    nameserver, worker_factory, pool
):
    """An exception whose str() raises, or whose message holds a lone surrogate, fails its call
    once with its own type: not a dead slot process retried (process), not a call that never
    answers (thread), not a NotSendable "result" of a task that returned nothing."""
    worker_factory(1, "--services", "compute", "--concurrency", "1", "--pool", pool, "--tasks", ERROR_TASKS)
    with Cluster(nameserver, wait=20, retries=2) as cluster:
        future = cluster.submit("raise_unprintable")
        with pytest.raises(TaskFailed) as caught:
            future.result(timeout=15)
        assert caught.value.type == "Unprintable" and future.attempts == 1
        assert "str() raised ValueError: no text for this one" in caught.value.message
        with pytest.raises(ValueError) as surrogate:
            cluster.submit("raise_surrogate").result(timeout=15)
        assert surrogate.value.message == "caf\\udce9.txt"  # type: ignore[attr-defined]
        assert cluster.submit("add", 1, 2).result(timeout=15) == 3  # the slot serves on


def test_a_remote_error_survives_pickle_and_copy_with_its_types(nameserver, worker_factory):
    """As any exception does: a caller that runs the cluster inside a process pool, or hands the
    error to another process, gets it back whole (it was a TypeError from ``__init__``)."""
    worker_factory(1, "--services", "compute", "--concurrency", "1", "--tasks", ERROR_TASKS)
    with Cluster(nameserver, wait=20) as cluster:
        failed = cluster.submit("divide", 1, 0).exception(timeout=30)
        upstream = cluster.submit("add", cluster.submit("lookup", {}, "k"), 1).exception(timeout=30)
    assert isinstance(failed, ZeroDivisionError) and isinstance(upstream, UpstreamFailed)
    for error in (failed, upstream):
        for again in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
            assert type(again) is type(error) and str(again) == str(error)
    again_failed = pickle.loads(pickle.dumps(failed))
    assert (again_failed.type, again_failed.message, again_failed.traceback) == (  # type: ignore[attr-defined]
        failed.type,  # type: ignore[attr-defined]
        failed.message,  # type: ignore[attr-defined]
        failed.traceback,  # type: ignore[attr-defined]
    )
    again_upstream = pickle.loads(pickle.dumps(upstream))
    assert again_upstream.upstream == "lookup" and isinstance(again_upstream.cause, KeyError)


def test_register_error_takes_only_exception_classes():
    with pytest.raises(TypeError, match="exception class"):
        register_error(int)  # type: ignore[type-var]
