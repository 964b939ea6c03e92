"""One call's state as the coordinator tracks it, and the future handed to the caller."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import Future
from typing import Any

from pyrocluster.errors import PyroClusterError, TaskFailed, WorkerUnavailable

_batch_ids = itertools.count(1)


class Call:
    """A task on its way through the coordinator: what to run, where it went, how it ended."""

    __slots__ = (
        "service",
        "name",
        "args",
        "kwargs",
        "tags",
        "timeout_s",
        "retries",
        "retry_on_error",
        "future",
        "attempts",
        "done",
        "worker",
        "elapsed_ms",
        "batch_id",
        "queued_at",
        "last_error",
    )

    def __init__(
        self,
        service: str,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        tags: frozenset[str],
        timeout_s: float,
        retries: int,
        retry_on_error: bool,
    ) -> None:
        self.service = service
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.tags = tags
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_on_error = retry_on_error
        self.future: TaskFuture = TaskFuture(self)
        self.attempts = 0
        self.done = False
        self.worker: str | None = None
        self.elapsed_ms = 0.0
        self.batch_id = 0
        self.queued_at = time.monotonic()
        self.last_error = ""

    @property
    def requirement(self) -> tuple[str, frozenset[str]]:
        """The queue it waits in: its service and the tags a worker must carry."""
        return (self.service, self.tags)

    def wire(self) -> list[Any]:
        """The call as a worker receives it."""
        return [self.name, self.args, self.kwargs, self.timeout_s]


class TaskFuture(Future):  # type: ignore[type-arg]
    """A ``concurrent.futures.Future`` that also tells which worker ran the call and its attempts."""

    def __init__(self, call: Call) -> None:
        super().__init__()
        self.call = call

    @property
    def worker(self) -> str | None:
        """Name of the worker whose outcome was recorded."""
        return self.call.worker

    @property
    def attempts(self) -> int:
        """Attempts made."""
        return self.call.attempts

    @property
    def elapsed_ms(self) -> float:
        """Run time of the recorded attempt on the worker, in milliseconds."""
        return self.call.elapsed_ms


class Batch:
    """Calls sent to one worker in one request."""

    __slots__ = ("id", "service", "calls", "sent_at")

    def __init__(self, service: str, calls: list[Call]) -> None:
        self.id = next(_batch_ids)
        self.service = service
        self.calls = calls
        self.sent_at = 0.0


def settle(resolutions: list[tuple[Call, Any, PyroClusterError | None]]) -> None:
    """Complete futures outside the dispatcher's lock (their callbacks may be slow)."""
    for call, value, error in resolutions:
        fut = call.future
        if fut.done():
            continue
        if error is None:
            fut.set_result(value)
        else:
            fut.set_exception(error)


def task_failed(value: Any) -> TaskFailed:
    """TaskFailed from a worker's error dict."""
    if not isinstance(value, dict):
        return TaskFailed("Error", str(value))
    return TaskFailed(
        str(value.get("type", "Error")), str(value.get("message", "")), str(value.get("traceback", ""))
    )


def gave_up(call: Call, reason: str) -> WorkerUnavailable:
    """WorkerUnavailable for a call that ran out of attempts."""
    return WorkerUnavailable(
        f"{call.service} call {call.name!r} gave up after {call.attempts} attempt(s): {reason}"
    )
