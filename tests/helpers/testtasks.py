"""User tasks for the integration tests (loaded with --tasks)."""

import os
import time

from pyrocluster import task


@task
def interval(seconds: float) -> list:
    """Sleep and report [pid, start, end] so tests can measure concurrency."""
    start = time.time()
    time.sleep(seconds)
    return [os.getpid(), start, time.time()]


@task(name="unsendable")
def unsendable() -> object:
    """Return a value that cannot cross the wire."""
    return object()


@task
def whoami() -> int:
    """The pid of the process that ran the task."""
    return os.getpid()
