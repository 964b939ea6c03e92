"""What the dashboard plots: cluster throughput and failures over 15 minutes, and each task's p50/p95.

Pure code over what each refresh round already has (the workers' counters and duration
histograms); the page draws the series as SVG itself.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

WINDOW_S = 15 * 60
"""How far back the throughput chart goes."""
BUCKET_S = 10
"""Width of one point of the throughput chart."""


class Throughput:
    """Finished and failed tasks per second over the last :data:`WINDOW_S`, from cumulative counters.

    Each round adds the cluster's totals (the sum of the workers' ``done`` and ``failed``); a
    total that went down (a worker restarted or left) counts as no progress, never negative.
    """

    def __init__(self, window_s: float = WINDOW_S, bucket_s: float = BUCKET_S) -> None:
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._samples: deque[tuple[float, int, int]] = deque()
        self._buckets: dict[int, list[int]] = {}
        """Bucket number -> [finished, failed] in it."""

    def add(self, now: float, done: int, failed: int) -> None:
        """The cluster's cumulative counters at ``now``."""
        if self._samples:
            _, last_done, last_failed = self._samples[-1]
            bucket = self._buckets.setdefault(int(now // self.bucket_s), [0, 0])
            bucket[0] += max(0, done - last_done) + max(0, failed - last_failed)
            bucket[1] += max(0, failed - last_failed)
        self._samples.append((now, done, failed))
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()
        oldest = int((now - self.window_s) // self.bucket_s)
        for key in [k for k in self._buckets if k < oldest]:
            del self._buckets[key]

    def series(self, now: float) -> dict[str, Any]:
        """``{"bucket_s", "start", "rate": [...], "failures": [...]}``: per second, oldest first."""
        last = int(now // self.bucket_s)
        first = last - int(self.window_s // self.bucket_s) + 1
        rate, failures = [], []
        for key in range(first, last + 1):
            finished, failed = self._buckets.get(key, (0, 0))
            rate.append(round(finished / self.bucket_s, 2))
            failures.append(round(failed / self.bucket_s, 2))
        return {"bucket_s": self.bucket_s, "start": first * self.bucket_s, "rate": rate, "failures": failures}


def quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile of a fixed-bucket histogram (upper ``bounds``, then +Inf), interpolated
    inside its bucket as Prometheus' ``histogram_quantile`` does; None when it is empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if seen + n >= rank and n:
            lower = bounds[i - 1] if i > 0 else 0.0
            if i >= len(bounds):  # the +Inf bucket: its lower bound is all we know
                return lower
            return lower + (bounds[i] - lower) * (rank - seen) / n
        seen += n
    return bounds[-1] if bounds else None


def task_quantiles(stats_by_worker: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per task over every worker: runs, p50 and p95 in ms (from the duration histograms)."""
    merged: dict[str, list[int]] = {}
    bounds: list[float] = []
    for stats in stats_by_worker:
        bounds = list(stats.get("buckets", bounds))
        for name, row in (stats.get("tasks") or {}).items():
            hist = row.get("histogram") or []
            into = merged.setdefault(name, [0] * len(hist))
            for i, n in enumerate(hist[: len(into)]):
                into[i] += int(n)
    out = []
    for name in sorted(merged):
        counts = merged[name]
        p50, p95 = quantile(bounds, counts, 0.5), quantile(bounds, counts, 0.95)
        if p50 is None or p95 is None or math.isnan(p50):
            continue
        out.append(
            {
                "task": name,
                "runs": sum(counts),
                "p50_ms": round(p50 * 1000, 2),
                "p95_ms": round(p95 * 1000, 2),
            }
        )
    return out
