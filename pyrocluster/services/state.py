"""What a worker knows about itself: name, state, counters; shared by its services."""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from pyrocluster.protocol import CANCELLED, NOT_RUN, OK
from pyrocluster.services.taskstats import TaskStats, log_failures

FOLD_EVERY = 256
"""Batches noted before :meth:`WorkerState.finished` counts them itself (bounds the memory)."""
UNCOUNTED = (NOT_RUN, CANCELLED)
"""Outcome kinds of calls that did not run here: they go back to their coordinator uncounted."""
CHILDREN_REFRESH_S = 5.0
"""Seconds between looks for the worker's slot processes (each look scans every process)."""


@dataclass
class WorkerState:
    """Counters and lifecycle flags of one worker, safe to update from many threads."""

    name: str
    services: list[str]
    tags: list[str]
    slots: int
    pool: str
    address: str = ""
    tasks: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    draining: bool = False
    done: int = 0
    failed: int = 0
    total_ms: float = 0.0
    direct: int = 0
    """Calls that came straight to a slot process (``slots/direct.py``), counted in ``done`` too."""
    active_calls: int = 0
    left_at: float = -math.inf
    """When the last batch call ended (monotonic): its reply is still on its way for a moment."""
    busy_fn: Any = None
    fold_fn: Any = None
    """Counts the direct calls that ended (``slots/lending.py``) before the counters are read."""
    resources_fn: Any = None
    """``{name: {"total", "used"}}`` of the compute resources (set with the compute service)."""
    stop_event: threading.Event = field(default_factory=threading.Event)
    task_stats: TaskStats = field(default_factory=TaskStats)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _unfolded: deque[tuple[Sequence[str], Sequence[int], Sequence[float]]] = field(default_factory=deque)
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
    _children_at: float = -CHILDREN_REFRESH_S

    def accepting(self) -> bool:
        """False once the worker is draining."""
        return not self.draining

    def enter(self) -> None:
        """A batch call started."""
        with self._lock:
            self.active_calls += 1

    def leave(self) -> None:
        """A batch call ended."""
        with self._lock:
            self.active_calls -= 1
            self.left_at = time.monotonic()

    def record(self, outcomes: list[list[Any]]) -> None:
        """Count a batch's outcomes (each ``[kind, value, elapsed_ms]``)."""
        ok = sum(1 for o in outcomes if o[0] == OK)
        ms = sum(o[2] for o in outcomes)
        with self._lock:
            self.done += ok
            self.failed += len(outcomes) - ok
            self.total_ms += ms

    def finished(self, names: list[str], outcomes: Sequence[Any], direct: bool = False) -> None:
        """A compute batch ended (or ``direct`` calls): ``names[i]`` ran as ``outcomes[i]``; log
        its failures now.

        Counting waits until someone reads the counters (or many batches wait), so a batch's
        reply does not wait on it: the worker's request thread only notes kinds and durations.
        """
        if not outcomes:
            return
        kinds, _, elapsed = zip(*outcomes, strict=True)
        self.ran(names, kinds, elapsed, direct, outcomes)

    def ran(
        self,
        names: Sequence[str],
        kinds: Sequence[int],
        elapsed: Sequence[float],
        direct: bool = False,
        outcomes: Sequence[Any] | None = None,
    ) -> None:
        """:meth:`finished` of calls given as columns (a direct batch's record); ``outcomes``, the
        rows whose failures are logged (made from the columns, with no value, when absent)."""
        if not kinds:
            return
        if direct:
            with self._lock:
                self.direct += len(kinds)
        if kinds.count(OK) != len(kinds):
            if outcomes is None:
                outcomes = [[kind, None, ms] for kind, ms in zip(kinds, elapsed, strict=True)]
            log_failures(names, outcomes)
        self._unfolded.append((names, kinds, elapsed))
        if len(self._unfolded) >= FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        """Count the batches noted by :meth:`finished` since the last fold."""
        with self._lock:
            while self._unfolded:  # appends may race with this loop: deque ends are thread-safe
                names, kinds, elapsed = self._unfolded.popleft()
                if kinds.count(OK) == len(kinds) and names.count(names[0]) == len(names):
                    self.done += len(kinds)  # the common batch: one task, every call ok
                    self.total_ms += sum(elapsed)
                    self.task_stats.add_ok(names[0], elapsed)
                    continue
                kept = [
                    (n, k, ms) for n, k, ms in zip(names, kinds, elapsed, strict=True) if k not in UNCOUNTED
                ]
                ok = sum(1 for _, k, _ in kept if k == OK)
                self.done += ok
                self.failed += len(kept) - ok
                self.total_ms += sum(ms for _, _, ms in kept)
                self.task_stats.add([n for n, _, _ in kept], [(k, None, ms) for _, k, ms in kept])

    def task_snapshot(self) -> dict[str, Any]:
        """Per-task counters and histograms, up to date."""
        if self.fold_fn is not None:
            self.fold_fn()
        self._fold()
        return self.task_stats.snapshot()

    def _resources(self) -> tuple[float, float]:
        """CPU % and RSS in MB of this process and its slot processes.

        Finding the slot processes reads every process of the machine (``children()`` is a scan
        of ``/proc``, 10-100 ms on a busy host), so it happens at most every CHILDREN_REFRESH_S;
        a slot process replaced in between is counted from the next look.
        """
        me = self._procs.setdefault(os.getpid(), psutil.Process())
        now = time.monotonic()
        if now - self._children_at >= CHILDREN_REFRESH_S:
            self._children_at = now
            try:
                # recursive: slot processes are the forkserver's children, not the worker's
                children = {child.pid: child for child in me.children(recursive=True)}
            except psutil.Error:
                children = None
            if children is not None:
                for pid in [p for p in self._procs if p != me.pid and p not in children]:
                    del self._procs[pid]
                for pid, child in children.items():
                    self._procs.setdefault(pid, child)
        procs = list(self._procs.values())
        cpu = rss = 0.0
        for proc in procs:
            try:
                cpu += proc.cpu_percent(interval=None)
                rss += proc.memory_info().rss
            except psutil.Error:
                self._procs.pop(proc.pid, None)
        return cpu, rss / 1e6

    def info(self) -> dict[str, Any]:
        """The worker as ``status --json`` shows it."""
        cpu, rss = self._resources()
        if self.fold_fn is not None:
            self.fold_fn()
        self._fold()
        with self._lock:
            finished = self.done + self.failed
            return {
                "name": self.name,
                "address": self.address,
                "services": list(self.services),
                "tags": list(self.tags),
                "state": "draining" if self.draining else "ready",
                "slots": self.slots,
                "busy": self.busy_fn() if self.busy_fn else 0,
                "done": self.done,
                "failed": self.failed,
                "mean_ms": round(self.total_ms / finished, 3) if finished else 0.0,
                "direct": self.direct,
                "uptime_s": round(time.time() - self.started, 1),
                "cpu_percent": round(cpu, 1),
                "rss_mb": round(rss, 1),
                "tasks": sorted(self.tasks),
                "resources": self.resources_fn() if self.resources_fn else {},
            }
