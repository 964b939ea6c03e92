"""Fired ticks' jobs, each in a thread of its own, run as ``submit`` would; their ends come back queued."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pyrocluster.config import Settings
from pyrocluster.errors import PyroClusterError
from pyrocluster.jobs.submit import SubmitOptions, submit_job
from pyrocluster.scheduler.spec import Schedule
from pyrocluster.scheduler.store import Claim
from pyrocluster.scheduler.ticks import iso, stamp

log = logging.getLogger(__name__)

RunJob = Callable[[Settings, SubmitOptions, threading.Event], str]
"""Runs one tick's job; returns its run status."""


def run_tick_job(settings: Settings, options: SubmitOptions, cancel: threading.Event) -> str:
    """Run one tick's job as ``submit`` would; its run status (``ok``, ``failed``, ``cancelled``)."""
    summary = submit_job(settings, options, cancel)
    return "cancelled" if summary.interrupted else ("failed" if summary.failed else "ok")


@dataclass(frozen=True)
class Finished:
    """A run that ended: which schedule and tick, its status, our claim of it."""

    schedule: str
    tick: datetime
    status: str
    claim: Claim


class TickRuns:
    """Starts tick runs; :attr:`finished` receives each one's end, and ``wake`` is set then."""

    def __init__(self, settings: Settings, wait_s: float, run_job: RunJob, wake: threading.Event) -> None:
        self.settings = settings
        self.wait_s = wait_s
        self.finished: queue.Queue[Finished] = queue.Queue()
        self.cancel = threading.Event()
        """Set when the drain timeout runs out: running jobs stop as a cancelled ``submit`` does."""
        self._run_job = run_job
        self._wake = wake

    def start(self, schedule: Schedule, tick: datetime, claim: Claim) -> threading.Thread:
        """Start the run of ``tick``'s job in a thread of its own."""
        thread = threading.Thread(
            target=self._run, args=(schedule, tick, claim), name=f"tick-{schedule.name}", daemon=True
        )
        thread.start()
        return thread

    def _run(self, schedule: Schedule, tick: datetime, claim: Claim) -> None:
        output = schedule.output_for(stamp(tick))
        status = "error"
        try:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            options = SubmitOptions(job_file=str(schedule.job_path), out=output, wait_s=self.wait_s)
            status = self._run_job(self.settings, options, self.cancel)
        except PyroClusterError as exc:
            log.warning(
                "schedule %s tick %s did not run: %s",
                schedule.name,
                iso(tick),
                exc,
                extra=about(schedule.name),
            )
        except Exception as exc:  # a run must never take the scheduler down
            log.warning(
                "schedule %s tick %s failed: %s: %s", schedule.name, iso(tick), type(exc).__name__, exc,
                extra=about(schedule.name),
            )  # fmt: skip
        self.finished.put(Finished(schedule.name, tick, status, claim))
        self._wake.set()


def about(schedule: str) -> dict[str, str]:
    """The ``extra`` of a log record about one schedule (its ``schedule`` field in JSON logs)."""
    return {"schedule": schedule}
