"""Every built-in exception a task raises arrives as that type and as TaskFailed, whatever its constructor."""

from __future__ import annotations

import builtins

import pytest

from pyrocluster.errors import TaskFailed, remote_error

BUILTIN_ERRORS = sorted(
    name
    for name, cls in vars(builtins).items()
    if isinstance(cls, type) and issubclass(cls, Exception) and not name.startswith(("Stop", "_"))
)


@pytest.mark.parametrize("name", BUILTIN_ERRORS)
def test_a_builtin_error_is_both_its_type_and_task_failed(name):
    error = remote_error(name, "what went wrong", "remote traceback text")
    assert isinstance(error, getattr(builtins, name)) and isinstance(error, TaskFailed)
    assert (error.type, error.message, error.traceback) == (name, "what went wrong", "remote traceback text")
    assert str(error).startswith(f"{name}: what went wrong")


def test_an_exception_group_holds_the_plain_error_as_its_one_exception():
    group = getattr(builtins, "ExceptionGroup", None)
    if group is None:
        pytest.skip("exception groups are Python 3.11 on")
    error = remote_error("ExceptionGroup", "2 sub-exceptions", "tb")
    assert isinstance(error, group) and isinstance(error, TaskFailed)
    (inner,) = error.exceptions
    assert type(inner) is TaskFailed
    assert (inner.type, inner.message) == ("ExceptionGroup", "2 sub-exceptions")


def test_stop_iteration_stays_plain_task_failed():
    assert type(remote_error("StopIteration", "", "")) is TaskFailed  # it would end a generator reading it
