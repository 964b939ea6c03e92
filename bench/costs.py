"""What processes cost, from the kernel's counters (``/proc``): CPU seconds and wake-ups.

The scale curve's per-worker costs are taken with these rather than from wall time: CPU
seconds and voluntary context switches (a thread that sleeps and is woken again) count the
same on a loaded machine as on a quiet one, while wall time on a shared 2-core machine does not.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from dataclasses import dataclass

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_s(path: str) -> float:
    """CPU seconds (user + system) of ``/proc/PID`` (a process) or ``/proc/PID/task/TID`` (one
    thread); 0 once it is gone."""
    try:
        with open(f"{path}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_S


def wakeups(path: str) -> int:
    """Voluntary context switches (each one sleep and wake-up) of every thread of a process, or
    of one thread."""
    statuses = [f"{path}/status"] if "/task/" in path else glob.glob(f"{path}/task/*/status")
    total = 0
    for status in statuses:
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
                        break
        except OSError:  # the thread ended meanwhile
            continue
    return total


def processes(pids: list[int]) -> list[str]:
    """The ``/proc`` paths of these processes."""
    return [f"/proc/{pid}" for pid in pids]


def threads_here(leave_out: set[str]) -> list[str]:
    """The ``/proc`` paths of this process's threads, but those named in ``leave_out``."""
    return [
        f"/proc/{os.getpid()}/task/{t.native_id}"
        for t in threading.enumerate()
        if t.name not in leave_out and t.native_id is not None
    ]


@dataclass
class Usage:
    """CPU seconds and wake-ups of a group of processes over one window of wall time."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    wakeups: int = 0

    def per_s(self, count: int = 1) -> tuple[float, float]:
        """(CPU ms per second, wake-ups per second), per process of ``count``."""
        if self.wall_s <= 0 or count <= 0:
            return 0.0, 0.0
        return self.cpu_s * 1000 / self.wall_s / count, self.wakeups / self.wall_s / count


class Meter:
    """Measures several named groups of processes (or threads) over one window (``with`` block)."""

    def __init__(self, groups: dict[str, list[str]]) -> None:
        self.groups = groups
        self.usage: dict[str, Usage] = {}
        """Per group."""
        self.each: dict[str, Usage] = {}
        """Per ``/proc`` path."""
        self._start: dict[str, tuple[float, int]] = {}
        self._t0 = 0.0

    def _read(self, ours_first: bool) -> dict[str, tuple[float, int]]:
        """Every path's counters; this process's own threads first or last, so that the
        reading (hundreds of /proc files) is not counted as this process's work."""
        mine = f"/proc/{os.getpid()}/"
        paths = sorted({p for group in self.groups.values() for p in group}, key=lambda p: p.startswith(mine))
        if ours_first:
            paths.reverse()
        return {p: (cpu_s(p), wakeups(p)) for p in paths}

    def __enter__(self) -> Meter:
        self._start = self._read(ours_first=False)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._t0
        end = self._read(ours_first=True)
        for path, (cpu0, wake0) in self._start.items():
            cpu1, wake1 = end[path]
            self.each[path] = Usage(wall, max(0.0, cpu1 - cpu0), max(0, wake1 - wake0))
        for name, paths in self.groups.items():
            self.usage[name] = Usage(
                wall, sum(self.each[p].cpu_s for p in paths), sum(self.each[p].wakeups for p in paths)
            )


class Collections:
    """Wall time this process spent in the garbage collector within a ``with`` block, and how
    many objects it tracked on entry: a full collection walks every one of them, so its cost
    grows with everything the process holds (for a coordinator: its records of every worker)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        """Collections of the oldest generation."""
        self.tracked = 0
        self._began = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._began
        self.full += info["generation"] == 2

    def __enter__(self) -> Collections:
        import gc

        self.tracked = len(gc.get_objects())
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        import gc

        gc.callbacks.remove(self._callback)
