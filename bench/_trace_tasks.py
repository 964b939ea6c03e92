"""Loaded by workers with ``--tasks`` for ``python -m bench.trace``: stamps where a call spends time.

``trace_add(a, b)`` returns ``[a + b, ran, batch_started]``: when the task ran and when its
batch started in the slot (process or thread). ``run_batch`` is wrapped so that its reply also
carries ``"trace": {stamp: seconds}``: entered (``w0``), the slots reached after validation and
admission (``p0``), the worker starts waiting for the slot process (``x0``, request sent on the
pipe) and wakes (``x1``, its reply read), the slots done (``p1``) and leaving (``w1``).
``time.perf_counter`` is CLOCK_MONOTONIC on Linux: one clock for every process on the machine.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pyrocluster import task

_batch_started = [0.0]
"""When the slot's last batch started running (in the process that runs it)."""


@task
def trace_add(a: Any, b: Any) -> list[Any]:
    """``a + b``, when it ran and when its batch started."""
    return [a + b, time.perf_counter(), _batch_started[0]]


def _stamped(cls: Any, name: str, before: str | None, after: str | None, stamps: threading.local) -> None:
    """Wrap ``cls.name`` to stamp the current request's ``before`` and ``after`` moments."""
    original = getattr(cls, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        st = getattr(stamps, "st", None)
        if st is not None and before:
            st[before] = time.perf_counter()
        result = original(*args, **kwargs)
        if st is not None and after:
            st[after] = time.perf_counter()
        return result

    setattr(cls, name, wrapper)


def _patch() -> None:
    from pyrocluster.services import compute
    from pyrocluster.slots import batch, process

    cls = compute.ComputeService
    if getattr(cls.run_batch, "_bench_traced", False):
        return
    stamps = threading.local()
    original = cls.run_batch

    def run_batch(self: Any, request: Any) -> Any:
        stamps.st = st = {"w0": time.perf_counter()}
        reply = original(self, request)
        st["w1"] = time.perf_counter()
        stamps.st = None
        if isinstance(reply, dict):
            reply["trace"] = st
        return reply

    run_batch._pyroExposed = True  # type: ignore[attr-defined]
    run_batch._bench_traced = True  # type: ignore[attr-defined]
    run_batch.__doc__ = original.__doc__
    cls.run_batch = run_batch  # type: ignore[method-assign,assignment]
    _stamped(process.ProcessSlots, "run", "p0", "p1", stamps)
    _stamped(process.SlotProcess, "_wait_reply", "x0", "x1", stamps)
    run = batch.BatchRun.run  # thread slots

    def batch_run(self: Any) -> None:
        _batch_started[0] = time.perf_counter()
        run(self)

    batch.BatchRun.run = batch_run  # type: ignore[method-assign]
    run_logged = process.run_logged  # process slots: a batch

    def logged_run(*args: Any, **kwargs: Any) -> Any:
        _batch_started[0] = time.perf_counter()
        return run_logged(*args, **kwargs)

    process.run_logged = logged_run  # type: ignore[assignment]
    run_lone = process.run_lone  # process slots: a direct call

    def lone_run(*args: Any, **kwargs: Any) -> Any:
        _batch_started[0] = time.perf_counter()
        return run_lone(*args, **kwargs)

    process.run_lone = lone_run  # type: ignore[assignment]


_patch()
