"""User tasks for the workflow tests (loaded with --tasks): side effects to count, sums, timings."""

import os
import time

from pyrocluster import task


@task
def mark(key: str, path: str, *inputs: object) -> str:
    """Append ``key`` to ``path`` (one write, so lines never interleave); return it; ignore ``inputs``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (key + "\n").encode())
    finally:
        os.close(fd)
    return key


@task
def timed_sum(*values: object, seconds: float = 0.05) -> dict:
    """Sum numbers, ``{"sum": n}`` results or lists of them; report when it started and ended."""
    start = time.time()

    def value(v: object) -> float:
        if isinstance(v, dict):
            return v["sum"]  # type: ignore[no-any-return]
        if isinstance(v, list):
            return sum(value(x) for x in v)
        return v  # type: ignore[return-value]

    total = sum(value(v) for v in values)
    time.sleep(seconds)
    return {"sum": total, "start": start, "end": time.time()}


@task
def raises(*args: object) -> None:
    """Always raise ValueError (a callback that fails)."""
    raise ValueError("callback exploded")


@task
def needs_file(path: str) -> str:
    """Fail unless ``path`` exists (a task that succeeds once the test lets it)."""
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return path
