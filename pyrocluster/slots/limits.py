"""What a process slot applies around one batch from its ask (SPEC 10): a memory limit and GPUs.

Memory: ``RLIMIT_AS`` (the soft limit) is set to the slot process's address space at the start
of the batch plus the ``memory`` asked, and put back when the batch ends. An allocation past it
fails inside the task (``MemoryError``), which is reported as ``MemoryExceeded``; the slot
process survives, so the batch's other calls run on and the worker is untouched. It bounds
virtual memory, not resident memory: a task that maps much more than it touches (some
allocators, thread stacks) can reach it below its true use, and memory taken by children the
task starts is theirs. No cgroup is needed, so it works on every Linux and macOS host.

GPUs: ``CUDA_VISIBLE_DEVICES`` is set to the device ids the batch holds (empty on a worker with
GPUs for a batch that asked none), and put back when the batch ends.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Mapping
from typing import Any

from pyrocluster import codec
from pyrocluster.protocol import ERROR
from pyrocluster.slots.batch import Outcome, encoded_failure

CUDA = "CUDA_VISIBLE_DEVICES"


def apply(limits: Mapping[str, Any]) -> Callable[[], None]:
    """Apply ``{"memory": bytes, "gpus": "3,5"}`` (either may be absent); returns the undo."""
    undo: list[Callable[[], None]] = []
    gpus = limits.get("gpus")
    if gpus is not None:
        before = os.environ.get(CUDA)
        os.environ[CUDA] = str(gpus)
        undo.append(lambda: _set_env(CUDA, before))
    memory = limits.get("memory")
    if memory:
        import psutil  # here, not at the top: the slots' fork server loads this module

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = int(psutil.Process().memory_info().vms) + int(memory)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
        undo.append(lambda: resource.setrlimit(resource.RLIMIT_AS, (soft, hard)))

    def restore() -> None:
        for step in undo:
            step()

    return restore


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def recorder(record: Callable[[Outcome], None], held: Mapping[str, Any]) -> Callable[[Outcome], None]:
    """``record`` itself, or, for a batch that asked ``memory``, ``record`` of each outcome with a
    task ``MemoryError`` reported as ``MemoryExceeded`` (its ask named)."""
    memory = held.get("memory")
    if not memory:
        return record

    def exceeded(outcome: Outcome) -> None:
        if outcome[0] == ERROR and isinstance(outcome[1], bytes):
            value = codec.unpack(outcome[1])
            if isinstance(value, dict) and value.get("type") == "MemoryError":
                message = f"the call used more than the {int(memory)} bytes of memory it asked for"
                outcome = encoded_failure(ERROR, "MemoryExceeded", message, outcome[2])
        record(outcome)

    return exceeded
