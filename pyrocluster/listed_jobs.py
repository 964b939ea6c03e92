"""Which jobs a status display lists, so that it stays readable however many jobs have run.

Running (and lost) jobs are always listed. Finished ones are grouped by name: a schedule that fires
every second, or a job run again and again, is one row (its latest run, with how many runs ended
each way) instead of a screenful of identical rows. Pure: no I/O.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

DEFAULT_LIMIT = 10
"""Rows of finished jobs shown by default (``status --limit``; 0 shows them all)."""
ACTIVE = ("running", "lost")
"""States of jobs that are listed whatever the filter: they need someone's attention."""


def _ended(job: dict[str, Any]) -> float:
    return float(job.get("ended") or 0.0)


def list_jobs(
    jobs: list[dict[str, Any]], which: str = "recent", limit: int = DEFAULT_LIMIT
) -> list[dict[str, Any]]:
    """The jobs to show: ``running`` (and lost), ``recent`` (also the latest finished run per name,
    with a ``runs`` count by state) or ``all`` (also every finished run), newest finished first.

    At most ``limit`` finished rows (0: no limit); a final ``{"more": N}`` row says how many were left out.
    """
    active = [j for j in jobs if j.get("state") in ACTIVE]
    done = sorted((j for j in jobs if j.get("state") not in ACTIVE), key=_ended, reverse=True)
    if which == "running":
        done = []
    elif which == "recent":
        latest: dict[str, dict[str, Any]] = {}
        runs: dict[str, Counter[str]] = {}
        for job in done:
            name = str(job.get("name"))
            latest.setdefault(name, job)
            runs.setdefault(name, Counter())[str(job.get("state"))] += 1
        done = [{**job, "runs": dict(runs[name])} for name, job in latest.items()]
    shown = done if limit <= 0 else done[:limit]
    rows = active + shown
    if len(shown) < len(done):
        rows.append({"more": len(done) - len(shown)})
    return rows


def ended_text(job: dict[str, Any], now: float | None = None) -> str:
    """When a finished job ended, as ``HH:MM:SS`` UTC with how long ago; ``-`` for a running one."""
    ended = _ended(job)
    if not ended:
        return "-"
    ago = max(0.0, (time.time() if now is None else now) - ended)
    since = f"{ago:.0f}s ago" if ago < 120 else f"{ago / 60:.0f}m ago"
    return time.strftime("%H:%M:%S", time.gmtime(ended)) + f" ({since})"


def runs_text(job: dict[str, Any]) -> str:
    """``12 (11 finished, 1 cancelled)`` for a grouped row; ``-`` for a single run."""
    runs: dict[str, int] = job.get("runs") or {}
    total = sum(runs.values())
    if total <= 1:
        return "-"
    return f"{total} (" + ", ".join(f"{n} {state}" for state, n in sorted(runs.items())) + ")"
