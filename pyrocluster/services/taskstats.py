"""Per-task outcome counters and a fixed-bucket duration histogram, kept by each worker (bounded)."""

from __future__ import annotations

import itertools
import logging
import operator
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Any

from pyrocluster import codec
from pyrocluster.protocol import CANCELLED, CRASHED, ERROR, NOT_RUN, OK, TIMEOUT, TRANSIENT, UNKNOWN_TASK

log = logging.getLogger("pyrocluster.worker")

DURATION_BUCKETS_S: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0)
"""Upper bounds, in seconds, of the duration histogram's buckets (``+Inf`` is implied)."""
MAX_TASK_NAMES = 1024
"""Most distinct task names counted; further names share the row ``OTHER`` (memory stays bounded)."""
OTHER = "other"
KIND_NAMES = {
    OK: "ok",
    ERROR: "failed",
    TIMEOUT: "timeout",
    CRASHED: "crashed",
    TRANSIENT: "failed",
    NOT_RUN: "not_run",
    UNKNOWN_TASK: "failed",
    CANCELLED: "cancelled",
}
"""Outcome kind (``pyrocluster.protocol``) -> the status label it is counted under."""


def error_of(value: Any) -> dict[str, Any]:
    """The error dict of a failed outcome, whether sent packed (protocol v2) or as a dict."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = codec.unpack(bytes(value))
        except Exception:  # a log line must never fail a batch
            return {}
    return value if isinstance(value, dict) else {}


class TaskStats:
    """Counters per task and status, and a duration histogram per task; thread-safe."""

    def __init__(self, buckets: Sequence[float] = DURATION_BUCKETS_S) -> None:
        self.buckets = tuple(buckets)
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}
        self._hist: dict[str, list[int]] = {}
        self._sum_s: dict[str, float] = {}

    def _row(self, name: str) -> str:
        if name in self._counts or len(self._counts) < MAX_TASK_NAMES:
            return name
        return OTHER

    def add(self, names: Sequence[str], outcomes: Sequence[Sequence[Any]]) -> None:
        """Count one batch: ``names[i]`` is the task of ``outcomes[i] = [kind, value, elapsed_ms]``."""
        with self._lock:
            for name, outcome in zip(names, outcomes, strict=False):
                row = self._row(str(name))
                status = KIND_NAMES.get(outcome[0], "failed")
                counts = self._counts.setdefault(row, {})
                counts[status] = counts.get(status, 0) + 1
                if status in ("ok", "failed", "timeout", "crashed"):
                    seconds = float(outcome[2]) / 1000.0
                    hist = self._hist.setdefault(row, [0] * (len(self.buckets) + 1))
                    hist[bisect_left(self.buckets, seconds)] += 1
                    self._sum_s[row] = self._sum_s.get(row, 0.0) + seconds

    def add_ok(self, name: str, elapsed_ms: Sequence[float]) -> None:
        """Count calls of one task that all ended ok, as :meth:`add` would: in one pass when they
        all fall in the first bucket (a batch of quick calls), else bucketed in one sort."""
        if not elapsed_ms:
            return
        seconds = None  # all in the first bucket (dividing keeps the order)
        if max(map(float, elapsed_ms)) / 1000.0 > self.buckets[0]:
            seconds = sorted(map(operator.truediv, map(float, elapsed_ms), itertools.repeat(1000.0)))
        with self._lock:
            row = self._row(str(name))
            counts = self._counts.setdefault(row, {})
            counts["ok"] = counts.get("ok", 0) + len(elapsed_ms)
            hist = self._hist.setdefault(row, [0] * (len(self.buckets) + 1))
            self._sum_s[row] = self._sum_s.get(row, 0.0) + sum(map(float, elapsed_ms)) / 1000.0
            if seconds is None:
                hist[0] += len(elapsed_ms)
                return
            below = 0
            for i, bound in enumerate(self.buckets):  # bucket i: the seconds in (bound[i-1], bound[i]]
                upto = bisect_right(seconds, bound)
                hist[i] += upto - below
                below = upto
            hist[-1] += len(seconds) - below

    def snapshot(self) -> dict[str, Any]:
        """``{"buckets": [...], "tasks": {name: {"counts", "histogram", "sum_s"}}}`` (plain values)."""
        with self._lock:
            return {
                "buckets": list(self.buckets),
                "tasks": {
                    name: {
                        "counts": dict(counts),
                        "histogram": list(self._hist.get(name, [0] * (len(self.buckets) + 1))),
                        "sum_s": round(self._sum_s.get(name, 0.0), 6),
                    }
                    for name, counts in self._counts.items()
                },
            }


def log_failures(names: Sequence[str], outcomes: Sequence[Sequence[Any]]) -> None:
    """One INFO line per failed or timed-out call of a batch."""
    for name, outcome in zip(names, outcomes, strict=False):
        if outcome[0] == OK or outcome[0] not in (1, 2, 3, 4, 6):
            continue
        err = error_of(outcome[1])
        what = "timed out" if outcome[0] == 2 else "crashed" if outcome[0] == 3 else "failed"
        log.info(
            "task %s %s after %.0f ms: %s: %s",
            name,
            what,
            float(outcome[2]),
            err.get("type", "?"),
            str(err.get("message", ""))[:200],
        )
