"""User tasks: load them into workers with `pyrocluster worker --tasks examples/mytasks.py`."""

from __future__ import annotations

import statistics

from pyrocluster import task


@task(name="stats.mean")
def mean(values: list[float]) -> float:
    """The arithmetic mean of ``values``."""
    return statistics.fmean(values)


@task
def collatz_steps(n: int) -> int:
    """Steps for ``n`` to reach 1 under the Collatz map."""
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


@task
def shout(text: str, times: int = 1) -> str:
    """``text`` in capitals, repeated."""
    return " ".join([text.upper()] * times)
