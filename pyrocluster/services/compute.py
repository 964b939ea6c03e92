"""The exposed compute service: validates a batch of calls and runs it in one slot."""

from __future__ import annotations

from typing import Any

import Pyro5.api

from pyrocluster import tasks
from pyrocluster.services.state import WorkerState
from pyrocluster.slots import ProcessSlots, ThreadSlots

MAX_BATCH = 100_000
"""Most calls accepted in one batch."""
MAX_TIMEOUT_S = 7 * 24 * 3600.0
"""Longest per-call timeout accepted, in seconds."""


def check_call(call: Any) -> str | None:
    """What is wrong with one ``[name, args, kwargs, timeout_s]`` call, or None."""
    if not isinstance(call, (list, tuple)) or len(call) != 4:
        return "a call must be [name, args, kwargs, timeout_s]"
    name, args, kwargs, timeout_s = call
    if not isinstance(name, str) or name not in tasks.REGISTRY:
        return f"unknown task {name!r}" if isinstance(name, str) else "task name must be a string"
    if not isinstance(args, (list, tuple)):
        return "args must be a list"
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        return "kwargs must be a dict with string keys"
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, (int, float))
        or not 0 < timeout_s <= MAX_TIMEOUT_S
    ):
        return f"timeout must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]"
    return None


def task_names(calls: Any) -> list[str]:
    """The task name of each call of a batch, ``other`` for anything not registered (bounded labels)."""
    return [c[0] if isinstance(c, (list, tuple)) and c and c[0] in tasks.REGISTRY else "other" for c in calls]


@Pyro5.api.expose
class ComputeService:
    """Runs registered tasks; ``run_batch`` is the coordinator's only entry point."""

    def __init__(self, state: WorkerState, slots: ProcessSlots | ThreadSlots) -> None:
        self._state = state
        self._slots = slots

    def tasks(self) -> list[str]:
        """Names of the tasks this worker can run."""
        return sorted(tasks.REGISTRY)

    def run_batch(self, calls: Any) -> dict[str, Any]:
        """Run calls in one slot: ``{"outcomes": [[kind, value, ms], ...]}`` or ``{"refused": why}``."""
        if not self._state.accepting():
            return {"refused": "draining"}
        if not isinstance(calls, (list, tuple)) or not 0 < len(calls) <= MAX_BATCH:
            return {"error": f"a batch must be a list of 1 to {MAX_BATCH} calls"}
        problems = [check_call(c) for c in calls]
        good = [list(c) for c, p in zip(calls, problems, strict=False) if p is None]
        self._state.enter()
        try:
            ran = iter(self._slots.run(good)) if good else iter(())
        finally:
            self._state.leave()
        outcomes = [
            next(ran)
            if p is None
            else [tasks.ERROR, {"type": "InvalidCall", "message": p, "traceback": ""}, 0.0]
            for p in problems
        ]
        self._state.record(outcomes)
        self._state.count_tasks(task_names(calls), outcomes)
        return {"outcomes": outcomes}
