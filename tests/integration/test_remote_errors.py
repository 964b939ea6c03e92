"""A task's exception keeps its type on the caller's side, with the remote traceback in its text."""

from __future__ import annotations

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


def test_register_error_takes_only_exception_classes():
    with pytest.raises(TypeError, match="exception class"):
        register_error(int)  # type: ignore[type-var]
