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


@task
def logged(key: str, path: str, seconds: float = 0.0) -> str:
    """Append ``key`` to the file ``path`` (one write, so lines never interleave), sleep, return ``key``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (key + "\n").encode())
    finally:
        os.close(fd)
    time.sleep(seconds)
    return key
