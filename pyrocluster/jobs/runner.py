"""Run a job spec through a Cluster: stream its calls, record every outcome once, report progress."""

from __future__ import annotations

import contextlib
import itertools
import logging
import operator
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyrocluster.coordinator.calls import Call
from pyrocluster.coordinator.cluster import Cluster
from pyrocluster.errors import CredentialLapsed
from pyrocluster.jobs.bigvalues import JobValues
from pyrocluster.jobs.callcolumns import calls_of
from pyrocluster.jobs.items import TaskItem, count_task_items
from pyrocluster.jobs.records import (
    CANCELLED_REASON,
    cancelled_record,
    compute_record,
    contradicted,
    failure_entry,
    respelled,
)
from pyrocluster.jobs.results import ResultsStore
from pyrocluster.jobs.spec import JobSpec
from pyrocluster.jobs.workflow import Workflow

if TYPE_CHECKING:
    from pyrocluster.crawl.run import CrawlRun  # a crawl job's; imported by submit only for one

WINDOW = 20_000
"""Calls of a job queued or in flight at once: bounds the coordinator's memory."""
SUBMIT_CHUNK = 512
"""Calls handed to the dispatcher together."""
SHOWN_FAILURES = 10
"""Failed tasks listed by name at the end of a job (all of them are in the results file)."""
RECENT_FAILURES = 50
"""Failed tasks a running job keeps, with their tracebacks, for ``status`` and the dashboard."""
INTERRUPT_GRACE_S = 3.0
"""Seconds a stopped job waits for its recorder to write what it was given."""

log = logging.getLogger(__name__)
_STATUS = operator.itemgetter("status")
_ERROR = operator.attrgetter("error")


@dataclass
class JobSummary:
    """What ``submit`` prints at the end (``--json`` keys) and its exit status."""

    name: str
    total: int
    ok: int
    failed: int
    skipped: int
    cancelled: int
    retried: int
    wall_s: float
    tasks_per_s: float
    output: str
    interrupted: bool = False
    write_error: str = ""
    """Why the results file could not be written (the job stopped), or empty."""
    lapsed: str = ""
    """Why the workers refused our token (expired or revoked: the job stopped), or empty."""
    failures: list[tuple[str, str]] = field(default_factory=list)
    """The first few failed ids with their error, for the human summary."""

    def as_json(self) -> dict[str, Any]:
        """The summary object of ``submit --json``."""
        keys = (
            "name",
            "total",
            "ok",
            "failed",
            "skipped",
            "cancelled",
            "retried",
            "wall_s",
            "tasks_per_s",
            "output",
        )
        return {k: getattr(self, k) for k in keys}

    @property
    def exit_code(self) -> int:
        """130 when interrupted, 1 when a task failed, else 0."""
        return 130 if self.interrupted else (1 if self.failed else 0)


class JobRunner:
    """One run of a job: owns its results store and counters; ``run()`` blocks until done or stopped."""

    def __init__(
        self, spec: JobSpec, cluster: Cluster, output: Path, resume: bool, crawl: CrawlRun | None = None
    ) -> None:
        self.spec = spec
        self.cluster = cluster
        self.output = output
        self.resume = resume
        self.total = 0
        """Records besides the compute tasks' (crawl pages restored by ``--resume``)."""
        self.ok = self.failed = self.skipped = self.resumed = 0
        self.per_worker: Counter[str] = Counter()
        self.failures: list[tuple[str, str]] = []
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_FAILURES)
        self.failures_seen = 0
        """Failed tasks so far (the dashboard re-reads ``recent_failures()`` when it changes)."""
        self._started = time.monotonic()
        self._retried_base = cluster.retried
        self._lock = threading.Lock()
        self._room = threading.Condition()
        self._outstanding = 0
        """Calls submitted and not yet settled (guarded by ``_room``)."""
        self._closing = False
        self._store = ResultsStore(output)
        self.crawl = crawl
        self.workflow: Workflow | None = None
        self._planned = count_task_items(spec)
        self.cancelled = 0
        self.write_error: str | None = None
        self.lapsed: str | None = None
        """Why the workers refused our token mid-job; those calls never ran and are not recorded."""
        self._stop = threading.Event()
        self._inbox: queue.SimpleQueue[list[Call] | list[dict[str, Any]] | None] = queue.SimpleQueue()
        """What the recorder writes: settled calls, or ready records (crawl pages, cancelled tasks)."""
        self._recorder_thread = threading.Thread(target=self._recorder, name="recorder", daemon=True)
        self._spelled: dict[int, Any] = {}
        """Kept results read back from their files (``--resume``): how their records spell them."""
        self.values = JobValues(cluster, output, self.settled)
        """Big results kept on the workers, written beside the results file, made again if lost."""
        self._job_failed: bool | None = None
        """How the job ended (with failures or not), once it ran to its end: its callback's side."""

    # -- progress ----------------------------------------------------------------------------

    def _calls_waiting(self) -> dict[str, int]:
        """Work no worker has taken yet, per service: calls queued at the coordinator (up to
        WINDOW of them; a bigger job's rest is still in its file) and pages in the crawl frontier."""
        waiting = self.cluster.waiting_by_service()
        if self.crawl:
            waiting["crawl"] = waiting.get("crawl", 0) + self.crawl.frontier.pending()
        return waiting

    def snapshot(self) -> dict[str, Any]:
        """Counters for progress displays and the job's ``progress()`` (with a workflow's graph)."""
        drawn = self.workflow
        graph = {"graph": drawn.view()} if drawn is not None and drawn.flow.graph.has_edges else {}
        with self._lock:  # the graph is read first: the workflow's lock is never taken inside this one
            elapsed = max(1e-9, time.monotonic() - self._started)
            flow = self.workflow
            resumed = self.resumed + (flow.resumed if flow else 0)
            ok = self.ok + (flow.resumed if flow else 0)
            done = ok + self.failed + self.skipped  # finished; cancelled tasks are counted apart
            rate = (done - resumed) / elapsed
            total = (
                self.total
                + (flow.total if flow else self._planned)
                + (self.crawl.known() if self.crawl else 0)
            )
            left = total - done - self.cancelled
            crawl = self.crawl  # its pages are retried by the crawl, not the dispatcher
            return {
                "name": self.spec.name,
                "total": total,
                "done": done,
                "ok": ok,
                "failed": self.failed,
                "queued": self.crawl.frontier.pending() if self.crawl else 0,
                "waiting": flow.waiting if flow else 0,
                "calls_waiting": self._calls_waiting(),
                "skipped": self.skipped,
                "cancelled": self.cancelled,
                "priority": self.spec.defaults.priority,
                "retried": self.cluster.retried - self._retried_base + (crawl.retried if crawl else 0),
                "in_flight": self._outstanding,
                "rate": round(rate, 1),
                "eta_s": left / rate if rate > 0 and not self.cancelled else None,
                "per_worker": dict(self.per_worker),
                "failures_seen": self.failures_seen,
                **graph,
            }

    def recent_failures(self) -> list[dict[str, Any]]:
        """The last failed tasks (at most ``RECENT_FAILURES``), newest last: id, type, message, traceback."""
        with self._lock:
            return list(self._recent)

    # -- recording ---------------------------------------------------------------------------

    def record(self, records: list[dict[str, Any]]) -> None:
        """Append outcomes and count them, then the records that follow (on the recorder's thread)."""
        written = self._write(records)
        if self.workflow is not None and written:
            following = self.workflow.recorded(written)
            if following:
                self._write(following)

    def _write(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append records (one write) and count them as written; a failed write stops the job."""
        if self.write_error is not None:
            return []
        try:
            written = self._store.append_many(records)
        except OSError as exc:
            self.write_error = f"cannot write the results file {self.output}: {exc.strerror or exc}"
            self._stop.set()
            return []
        if list(map(_STATUS, written)).count("ok") == len(written):  # the common chunk: all ok
            ok_by_worker: Counter[Any] = Counter(map(dict.get, written, itertools.repeat("worker")))
            others: list[dict[str, Any]] = []
        else:
            ok_by_worker = Counter(r.get("worker") for r in written if r["status"] == "ok")
            others = [r for r in written if r["status"] != "ok"]
        ok = ok_by_worker.total()
        for nobody in ("", None):  # ok records without a worker (none today) count in ``ok`` only
            ok_by_worker.pop(nobody, None)
        with self._lock:
            self.ok += ok
            self.per_worker.update(ok_by_worker)
            for record in others:
                status = record["status"]
                if status == "skipped":
                    self.skipped += 1
                elif status == "cancelled":
                    self.cancelled += 1
                else:
                    self.failed += 1
                    err = record.get("error") or {}
                    self.failures_seen += 1
                    self._recent.append(failure_entry(record))
                    if len(self.failures) < SHOWN_FAILURES:
                        self.failures.append((record["id"], f"{err.get('type')}: {err.get('message')}"))
        return written

    def _append(self, records: list[dict[str, Any]]) -> None:
        """Write records decided without an outcome (the workflow's, from kept ones)."""
        self._write(records)

    def _crawled(self, record: dict[str, Any]) -> None:
        self._inbox.put([record])

    def settled(self, calls: list[Call]) -> None:
        """Compute calls of this job ended (the dispatcher calls this): the recorder writes them.

        Nothing here may block or raise: it runs on the dispatcher's and the links' threads.
        """
        self._inbox.put(calls)

    def _recorder(self) -> None:
        """The one thread that writes outcomes, off the transport threads and the dispatcher's lock.

        It takes everything queued at once (in order), so that a burst of replies costs one write.
        """
        inbox = self._inbox
        while True:
            items = [inbox.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    items.append(inbox.get_nowait())
            records: list[dict[str, Any]] = []
            settled = 0
            end = False
            for item in items:
                if item is None:
                    end = True
                    break
                if item and isinstance(item[0], Call):
                    if not self._closing:  # kept values written, lost ones made again
                        item = self.values.ready(item)  # type: ignore[arg-type]
                        made = [compute_record(c.tag, c) for c in self._ran(item)]  # type: ignore[arg-type, union-attr]
                        records += respelled(made, self._spelled) if self._spelled else made
                    settled += len(item)
                elif not self._closing:
                    records += item  # type: ignore[arg-type]
            if records:
                self.record(records)
            if settled:
                with self._room:
                    self._outstanding -= settled
                    self._room.notify_all()
            if end:
                return

    def _ran(self, calls: list[Call]) -> list[Call]:
        """The calls to record: one refused for a lapsed token never ran, and stops the job."""
        if not any(map(_ERROR, calls)):  # the common chunk: every call succeeded
            return calls
        ran = [c for c in calls if not isinstance(c.error, CredentialLapsed)]
        if len(ran) < len(calls):
            self.lapsed = self.lapsed or next(str(c.error) for c in calls if c not in ran)
            self._stop.set()
        return ran

    # -- running -----------------------------------------------------------------------------

    def open(self) -> dict[str, dict[str, Any]]:
        """Open the results file (kept ``ok`` records with ``--resume``); OSError if it cannot be written."""
        kept = self._store.open(self.resume)
        # A result kept beside the file flows downstream like any other, from its file to a worker.
        self.values.read_kept(kept, self.spec, self._spelled)
        if self.crawl is not None:
            restored = self.crawl.restore(kept.values())
            with self._lock:
                self.ok += restored
                self.resumed += restored
                self.total += restored
        return kept

    def run(self, stop: threading.Event, kept: dict[str, dict[str, Any]]) -> JobSummary:
        """Run every call not ``ok`` in ``kept``, each once its dependencies are; on ``stop``, return.

        A results file that cannot be written sets ``stop`` too (``write_error`` says why).
        """
        self._started = time.monotonic()
        self._stop = stop
        self._recorder_thread.start()
        self.workflow = Workflow(self.spec, kept, self._append, self._store.forget, self._spelled)
        self.values.no_keep = self.workflow.map_sources()
        self.values.released = self.workflow.released
        self._run_tasks(self.workflow.chunks(stop), stop)
        if self.crawl is not None and not stop.is_set():
            self.crawl.run(self._crawled, stop)
        self._drain(stop)
        cancelled = stop.is_set() and self.write_error is None and self.lapsed is None
        if cancelled:
            self._cancel(kept)
        elif stop.is_set():
            self._grace()
        if not stop.is_set():
            summary = self._summary(False)
            self._job_failed = summary.failed > 0
            callback = self.workflow.job_callback(summary.as_json(), self._job_failed)
            if callback is not None:
                self._run_tasks(iter(([callback],)), stop)
                self._drain(stop)
        self._inbox.put(None)  # the recorder writes what came before, then ends
        self._recorder_thread.join(timeout=INTERRUPT_GRACE_S)
        self.values.free()
        # Once stopped, outcomes still arriving are not written: the summary matches the file.
        self._closing = True
        return self._summary(cancelled)

    def _cancel(self, kept: dict[str, dict[str, Any]]) -> None:
        """Stop the job: its calls are cancelled (on the workers too), then every task that has no
        outcome yet is recorded ``cancelled``, so ``--resume`` runs exactly those."""
        assert self.workflow is not None
        unfinished = self.workflow.cancel()  # first: cancelled outcomes skip nothing downstream
        self.cluster.cancel_calls(self)  # they settle at once; the recorder writes them
        self.cluster.cancel_calls(self.values.remakes)
        self._grace()
        batch: list[dict[str, Any]] = []
        for item in unfinished:
            if item.id not in kept and not self._store.has(item.id):
                batch.append(cancelled_record(item))
                if len(batch) >= SUBMIT_CHUNK:
                    self._inbox.put(batch)
                    batch = []
        if batch:
            self._inbox.put(batch)
        if self.crawl is not None:  # its pages being fetched or waiting within max_pages
            self.cluster.cancel_calls(self.crawl)
            pages = self.crawl.cancelled_records(CANCELLED_REASON)
            self._inbox.put([page for page in pages if not self._store.has(page["id"])])

    def _run_tasks(self, chunks: Iterator[list[TaskItem] | None], stop: threading.Event) -> None:
        """Submit calls as the workflow hands them out, ``SUBMIT_CHUNK`` or more at a time (None: it
        waits, send what we have)."""
        pending: list[Call] = []
        for chunk in chunks:
            if chunk is not None:
                pending += self.values.prepare_all(calls_of(chunk, self))
                if len(pending) < SUBMIT_CHUNK:
                    continue
            if pending and not self._submit(pending, stop):
                return
            pending = []
        if pending:
            self._submit(pending, stop)

    def _drain(self, stop: threading.Event) -> None:
        """Wait for the calls in flight to be recorded, or for ``stop``."""
        with self._room:
            while self._outstanding and not stop.is_set():
                self._room.wait(0.2)

    def _grace(self) -> None:
        """Once stopped: at most ``INTERRUPT_GRACE_S`` more for outcomes already under way.

        It comes after cancelling, whose outcomes settle at once: a cancelled job does not wait out
        tasks that will never answer (SPEC 6: ``submit`` exits within 5 s).
        """
        deadline = time.monotonic() + INTERRUPT_GRACE_S
        with self._room:
            while self._outstanding and time.monotonic() < deadline:
                self._room.wait(0.1)

    def _submit(self, chunk: list[Call], stop: threading.Event) -> bool:
        """Hand calls to the cluster once the window has room; False when stopped first."""
        with self._room:
            while self._outstanding + len(chunk) > WINDOW:
                if stop.is_set():
                    return False
                self._room.wait(0.2)
            self._outstanding += len(chunk)
        self.cluster.submit_calls(chunk)
        return True

    def _summary(self, interrupted: bool) -> JobSummary:
        wall = time.monotonic() - self._started
        snap = self.snapshot()
        ran = snap["done"] - self.resumed - (self.workflow.resumed if self.workflow else 0)
        return JobSummary(
            name=self.spec.name,
            total=snap["total"],
            ok=snap["ok"],
            failed=self.failed,
            skipped=self.skipped,
            cancelled=self.cancelled,
            retried=snap["retried"],
            wall_s=round(wall, 3),
            tasks_per_s=round(ran / wall, 1) if wall > 0 else 0.0,
            output=str(self.output),
            interrupted=interrupted,
            write_error=self.write_error or "",
            lapsed=self.lapsed or "",
            failures=list(self.failures),
        )

    def close(self) -> int:
        """Compact the results file to one line per id; return its line count.

        Callback lines of an earlier run that this run's outcomes contradict (the task ran again
        and ended otherwise, the job ended otherwise) are dropped: the file tells of one run.
        """
        self._closing = True
        with contextlib.suppress(OSError):  # cannot be read back: they stay, as before
            for key in contradicted(self._store.callbacks_read, self._store.statuses, self._job_failed):
                self._store.forget(key)
        return self._store.close(compact=True)
