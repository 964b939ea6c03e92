"""Loaded by workers with ``--tasks`` for ``python -m bench.trace``: stamps where a call spends time.

``trace_add(a, b)`` returns ``[a + b, perf_counter()]`` (the moment the task ran, in the slot);
``run_batch`` is wrapped so that its reply also carries ``"trace": [entered, leaving]``.
``time.perf_counter`` is CLOCK_MONOTONIC on Linux: one clock for every process on the machine.
"""

from __future__ import annotations

import time
from typing import Any

from pyrocluster import task


@task
def trace_add(a: Any, b: Any) -> list[Any]:
    """``a + b`` and when it ran."""
    return [a + b, time.perf_counter()]


def _patch() -> None:
    from pyrocluster.services import compute

    cls = compute.ComputeService
    if getattr(cls.run_batch, "_bench_traced", False):
        return
    original = cls.run_batch

    def run_batch(self: Any, calls: Any) -> Any:
        entered = time.perf_counter()
        reply = original(self, calls)
        if isinstance(reply, dict):
            reply["trace"] = [entered, time.perf_counter()]
        return reply

    run_batch._pyroExposed = True  # type: ignore[attr-defined]
    run_batch._bench_traced = True  # type: ignore[attr-defined]
    run_batch.__doc__ = original.__doc__
    cls.run_batch = run_batch  # type: ignore[method-assign,assignment]


_patch()
