"""The long-running scheduler: leads schedules, claims and fires their ticks, records every decision.

One thread (``serve``) does every name-server call, with one proxy; each fired tick runs in a
thread of its own through :func:`pyrocluster.jobs.submit.submit_job`, exactly as ``submit``
would run the job, and reports back through a queue.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import Pyro5.errors

from pyrocluster.config import Settings
from pyrocluster.defaults import DEFAULT_DRAIN_TIMEOUT_S, DEFAULT_SCHEDULER_STATE, DEFAULT_SUBMIT_WAIT_S
from pyrocluster.errors import ClusterUnreachable, ConfigError, PyroClusterError
from pyrocluster.jobs.submit import SubmitOptions, submit_job
from pyrocluster.nameserver import registry
from pyrocluster.nameserver.schedules import publish, unpublish
from pyrocluster.scheduler import store
from pyrocluster.scheduler.journal import StateFile, append_tick, tick_line
from pyrocluster.scheduler.lease import Leadership
from pyrocluster.scheduler.spec import Schedule
from pyrocluster.scheduler.ticks import (
    FIRE,
    QUEUE,
    Policy,
    from_stamp,
    iso,
    iter_ticks,
    plan,
    stamp,
    ticks_between,
)

log = logging.getLogger(__name__)

UTC = timezone.utc
ROUND_S = 1.0
"""Seconds between lease rounds (renew or watch) when no tick is due sooner."""
PUBLISH_S = 2.0
"""Seconds between refreshes of what ``status`` shows."""
PRUNE_MARGIN_S = 600.0
"""Claims are kept for ``catchup`` plus this many seconds behind the newest decision."""
PRUNE_PER_ROUND = 20
"""Old claims removed per round at most (pruning stays in the background)."""
CANCEL_GRACE_S = 15.0
STUCK_ROUND_S = 10.0
"""A loop that has not finished a round for this long is stuck (a round's calls time out in 2 s)."""
"""Seconds cancelled runs have to end after ``--drain-timeout``."""
LOST = "lost"
"""Run status of a tick whose scheduler died while it ran."""


def utc_now() -> datetime:
    """The wall clock, UTC."""
    return datetime.now(UTC)


def run_tick_job(settings: Settings, options: SubmitOptions, cancel: threading.Event) -> str:
    """Run one tick's job as ``submit`` would; its run status (``ok``, ``failed``, ``cancelled``)."""
    summary = submit_job(settings, options, cancel)
    return "cancelled" if summary.interrupted else ("failed" if summary.failed else "ok")


@dataclass
class SchedulerOptions:
    """What ``pyrocluster scheduler`` was told besides the shared settings."""

    schedules_file: str
    name: str = ""
    state_path: str = DEFAULT_SCHEDULER_STATE
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    wait_s: float = DEFAULT_SUBMIT_WAIT_S

    def resolved_name(self) -> str:
        """The name, defaulting to ``<hostname>-<pid>``."""
        return self.name or f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ScheduleState:
    """What this scheduler holds for one schedule."""

    schedule: Schedule
    lease: Leadership
    watermark: datetime | None = None
    """Every tick at or before this instant is decided (by someone)."""
    queued: list[datetime] = field(default_factory=list)
    running: dict[datetime, threading.Thread] = field(default_factory=dict)
    last_fire: str = ""
    last_status: str = ""
    pruned_to: datetime | None = None

    @property
    def policy(self) -> Policy:
        """The schedule's misfire and overlap rules."""
        s = self.schedule
        return Policy(misfire=s.misfire, catchup_s=s.catchup_s, overlap=s.overlap)


@dataclass(frozen=True)
class Finished:
    """A run that ended: which tick, its status, when it was fired."""

    state: ScheduleState
    tick: datetime
    status: str
    decided_at: str


class Scheduler:
    """Runs ``schedules`` until ``stop`` is set: ``start()`` connects, ``serve()`` loops and drains."""

    def __init__(
        self,
        settings: Settings,
        schedules: list[Schedule],
        options: SchedulerOptions,
        wall: Callable[[], datetime] = utc_now,
        clock: Callable[[], float] = time.monotonic,
        connect: Callable[[], Any] | None = None,
        run_job: Callable[[Settings, SubmitOptions, threading.Event], str] = run_tick_job,
    ) -> None:
        self.settings = settings
        self.options = options
        self.name = options.resolved_name()
        if not self.name or any(c.isspace() or c in ":|" for c in self.name):
            raise ConfigError(f"--name {self.name!r}: must be non-empty, without spaces, ':' or '|'")
        self.instance = f"{self.name}.{secrets.token_hex(3)}"
        self._wall, self._clock = wall, clock
        self._connect = connect or (lambda: registry.connect(settings, timeout_s=2.0))
        self._run_job = run_job
        self.states = [ScheduleState(s, Leadership(s.name, self.instance, self.name)) for s in schedules]
        self._statefile = StateFile(Path(options.state_path))
        self._ns: Any = None
        self._finished: queue.Queue[Finished] = queue.Queue()
        self._pending: list[Finished] = []
        self._wake = threading.Event()
        self._cancel = threading.Event()
        self._published = float("-inf")
        self.last_round = clock()
        """Clock time the last round ended (liveness: the loop goes round)."""
        self.reached_ns = False
        """Whether the last round reached the name server (readiness: it can lead or stand by)."""

    def start(self) -> None:
        """Connect to the name server (ClusterUnreachable when it is not there) and announce ourselves."""
        self._ns = self._connect()
        known = self._statefile.load()
        for st in self.states:
            mark = known.get(st.schedule.name)
            if mark:
                st.watermark = _parse_iso(mark["tick"])
                st.last_fire, st.last_status = mark.get("fire", ""), mark.get("status", "")
        self._publish(force=True)

    # -- the loop ------------------------------------------------------------------------

    def serve(self, stop: threading.Event) -> None:
        """Lead and fire until ``stop``; then let running ticks finish (or cancel them) and hand over."""
        drain_until: float | None = None
        cancel_until: float | None = None
        while True:
            if stop.is_set():
                if drain_until is None:
                    drain_until = self._clock() + self.options.drain_timeout_s
                    for st in self.states:
                        st.queued.clear()  # never claimed: a standby decides them by the misfire rule
                if not self._busy():
                    break
                if cancel_until is None and self._clock() >= drain_until:
                    log.warning("drain timeout: cancelling %d running tick(s)", self._running_count())
                    self._cancel.set()
                    cancel_until = self._clock() + CANCEL_GRACE_S
                if cancel_until is not None and self._clock() >= cancel_until:
                    break
            self.run_round(deciding=not stop.is_set())
            self._wake.wait(self._sleep_s())
            self._wake.clear()
        self._shutdown()

    def _busy(self) -> bool:
        return self._running_count() > 0 or not self._finished.empty() or bool(self._pending)

    def _running_count(self) -> int:
        return sum(len(st.running) for st in self.states)

    def _sleep_s(self) -> float:
        now = self._wall()
        wait = ROUND_S
        for st in self.states:
            if st.lease.leading:
                wait = min(wait, (st.schedule.timing.next_after(now) - now).total_seconds())
        return max(0.0, wait)

    def run_round(self, deciding: bool = True) -> None:
        """One pass: every schedule's lease and ticks, finished runs, and (now and then) status.

        ``serve`` calls it in a loop; tests call it with their own clocks.
        """
        try:
            ns = self._connected()
            self._collect_finished(ns)
            for st in self.states:
                self._step(ns, st, deciding)
            self._publish()
            self.reached_ns = True
        except (Pyro5.errors.PyroError, ClusterUnreachable, OSError) as exc:
            log.warning("name server at %s: %s", self.settings.ns_address, exc)
            self.reached_ns = False
            self._drop_connection()
            for st in self.states:
                st.lease.interrupted()
        finally:
            self.last_round = self._clock()

    def liveness(self) -> str | None:
        """None while the loop goes round, else how long it has not."""
        late = self._clock() - self.last_round
        return f"no scheduling round for {late:.0f} s" if late > STUCK_ROUND_S else None

    def readiness(self) -> str | None:
        """None while it leads or stands by (its last round reached the name server), else why not."""
        return None if self.reached_ns else f"name server at {self.settings.ns_address} unreachable"

    def _connected(self) -> Any:
        if self._ns is None:
            self._ns = self._connect()
        return self._ns

    def _drop_connection(self) -> None:
        if self._ns is not None:
            release = getattr(self._ns, "_pyroRelease", None)  # a plain NameServer object has none
            if release is not None:
                release()
            self._ns = None

    # -- one schedule --------------------------------------------------------------------

    def _step(self, ns: Any, st: ScheduleState, deciding: bool) -> None:
        was_leading = st.lease.leading
        leading = st.lease.step(ns, self._clock(), self._wall())
        if not leading:
            st.queued.clear()
            return
        now = self._wall()
        if not was_leading:
            self._take_over(ns, st, now)
        if not deciding:
            return
        assert st.watermark is not None and st.lease.leading_since is not None
        after = max([st.watermark, *st.queued[-1:]])
        due = ticks_between(st.schedule.timing, after, now)
        if not due and not (st.queued and not st.running):
            return
        actions = plan(due, st.queued, now, st.lease.leading_since, len(st.running), st.policy)
        st.queued = [a.tick for a in actions if a.kind == QUEUE]
        for action in actions:
            if action.kind == QUEUE:
                continue
            if not self._decide(ns, st, action.tick, "fired" if action.kind == FIRE else action.kind):
                self._wake.set()  # somebody else decided it: look again at once
                break
        self._prune(ns, st)

    def _take_over(self, ns: Any, st: ScheduleState, now: datetime) -> None:
        """We just became leader: start from the newest watermark anyone knows; record lost runs."""
        mark = store.read_watermark(ns, st.schedule.name)
        known = st.watermark
        if mark is not None and mark.tick:
            theirs = _parse_iso(mark.tick)
            if known is None or theirs > known:
                st.watermark, st.last_fire, st.last_status = theirs, mark.fire, mark.status
            for entry in mark.running:
                tick_stamp, _, by = entry.partition("|")
                if by != self.instance:
                    self._record_lost(ns, st, from_stamp(tick_stamp))
        if st.watermark is None:
            st.watermark = now.replace(microsecond=0)  # a new schedule starts now
        retention = timedelta(seconds=st.schedule.catchup_s + PRUNE_MARGIN_S)
        st.pruned_to = st.watermark - 2 * retention
        log.info(
            "leading schedule %s (token %s)", st.schedule.name, st.lease.token, extra=about(st.schedule.name)
        )
        self._save_watermark(ns, st)

    def _decide(self, ns: Any, st: ScheduleState, tick: datetime, decision: str) -> bool:
        """Claim ``tick`` with ``decision``; fire or record it. False when it was already decided."""
        at = iso(self._wall())
        claim = store.Claim(decision, self.instance, self.name, st.lease.token or 0, at)
        held = store.try_claim(ns, st.schedule.name, tick, claim)
        st.watermark = max(st.watermark or tick, tick)
        if held is not None:
            if held.by == st.lease.superseded and held.decision == "fired" and not held.status:
                self._record_lost(ns, st, tick)
            self._save_watermark(ns, st)
            return False
        if decision == "fired":
            st.last_fire, st.last_status = iso(tick), "running"
            thread = threading.Thread(
                target=self._run, args=(st, tick, at), name=f"tick-{st.schedule.name}", daemon=True
            )
            st.running[tick] = thread
            self._save_watermark(ns, st)
            thread.start()
        else:
            append_tick(
                st.schedule.ticks_log(), tick_line(st.schedule.name, iso(tick), decision, self.name, None, at)
            )
            self._save_watermark(ns, st)
        return True

    def _record_lost(self, ns: Any, st: ScheduleState, tick: datetime) -> None:
        """A tick fired by a scheduler that died while it ran: record it once, as ``lost``."""
        claim = store.read_claim(ns, st.schedule.name, tick)
        if claim is None or claim.decision != "fired" or claim.status:
            return
        store.set_claim_status(ns, st.schedule.name, tick, claim, LOST)
        line = tick_line(st.schedule.name, iso(tick), "fired", claim.name, LOST, claim.at)
        append_tick(st.schedule.ticks_log(), line)
        if st.last_fire == iso(tick):
            st.last_status = LOST
        log.warning(
            "schedule %s tick %s: its scheduler %s died while it ran",
            *(st.schedule.name, iso(tick), claim.name),
            extra=about(st.schedule.name),
        )

    def _save_watermark(self, ns: Any, st: ScheduleState) -> None:
        assert st.watermark is not None
        running = tuple(f"{stamp(t)}|{self.instance}" for t in sorted(st.running))
        mark = store.Watermark(iso(st.watermark), st.last_fire, st.last_status, self.name, running)
        store.write_watermark(ns, st.schedule.name, mark)
        self._statefile.save(
            {st.schedule.name: {"tick": mark.tick, "fire": mark.fire, "status": mark.status}}
        )

    def _prune(self, ns: Any, st: ScheduleState) -> None:
        if st.watermark is None or st.pruned_to is None:
            return
        limit = st.watermark - timedelta(seconds=st.schedule.catchup_s + PRUNE_MARGIN_S)
        old = [t for t in islice(iter_ticks(st.schedule.timing, st.pruned_to), PRUNE_PER_ROUND) if t <= limit]
        if old:
            store.remove_claims(ns, st.schedule.name, old)
            st.pruned_to = old[-1]

    # -- runs ----------------------------------------------------------------------------

    def _run(self, st: ScheduleState, tick: datetime, decided_at: str) -> None:
        """Run the job of one tick (in its own thread) as ``submit`` would."""
        schedule = st.schedule
        output = schedule.output_for(stamp(tick))
        status = "error"
        try:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            options = SubmitOptions(job_file=str(schedule.job_path), out=output, wait_s=self.options.wait_s)
            status = self._run_job(self.settings, options, self._cancel)
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
        self._finished.put(Finished(st, tick, status, decided_at))
        self._wake.set()

    def _collect_finished(self, ns: Any) -> None:
        while True:
            try:
                self._pending.append(self._finished.get_nowait())
            except queue.Empty:
                break
        while self._pending:
            self._record_finished(ns, self._pending[0])
            self._pending.pop(0)

    def _record_finished(self, ns: Any, done: Finished, offline: bool = False) -> None:
        st, tick = done.state, done.tick
        claim = None if offline else store.read_claim(ns, st.schedule.name, tick)
        st.running.pop(tick, None)
        if claim is not None and claim.status == LOST:
            log.warning(
                "schedule %s tick %s ended (%s) after it was recorded lost",
                st.schedule.name,
                iso(tick),
                done.status,
                extra=about(st.schedule.name),
            )
        else:
            if claim is not None:
                store.set_claim_status(ns, st.schedule.name, tick, claim, done.status)
            line = tick_line(st.schedule.name, iso(tick), "fired", self.name, done.status, done.decided_at)
            append_tick(st.schedule.ticks_log(), line)
        if st.last_fire == iso(tick):
            st.last_status = done.status
        if not offline:
            self._save_watermark(ns, st)
        if st.queued and not st.running:
            self._wake.set()

    # -- status and shutdown -------------------------------------------------------------

    def _publish(self, force: bool = False) -> None:
        mono = self._clock()
        if not force and mono - self._published < PUBLISH_S:
            return
        ns = self._connected()
        now = self._wall()
        shown = []
        for st in self.states:
            if not st.lease.leading:
                mark = store.read_watermark(ns, st.schedule.name)
                if mark is not None and mark.tick:
                    theirs = _parse_iso(mark.tick)
                    if st.watermark is None or theirs >= st.watermark:
                        st.watermark, st.last_fire, st.last_status = theirs, mark.fire, mark.status
                        self._statefile.save(
                            {st.schedule.name: {"tick": mark.tick, "fire": mark.fire, "status": mark.status}}
                        )
                elif st.watermark is not None and mark is None:
                    self._save_watermark(ns, st)  # the name server forgot (memory storage restarted)
            shown.append(
                {
                    "name": st.schedule.name,
                    "next_fire": iso(st.schedule.timing.next_after(now)),
                    "last_fire": st.last_fire or None,
                    "last_status": st.last_status or None,
                    "leader": st.lease.leader_name or None,
                }
            )
        publish(ns, self.instance, self.name, time.time(), shown)
        self._published = mono

    def _shutdown(self) -> None:
        """Record what ended, hand every lease over and leave the name server."""
        while not self._finished.empty():
            self._pending.append(self._finished.get_nowait())
        try:
            ns = self._connected()
            for done in self._pending:
                self._record_finished(ns, done)
            self._pending.clear()
            for st in self.states:
                st.lease.release(ns)
            unpublish(ns, self.instance)
        except (Pyro5.errors.PyroError, ClusterUnreachable, OSError) as exc:
            log.warning("could not hand over cleanly: %s", exc)
            for done in self._pending:
                self._record_finished(None, done, offline=True)
        finally:
            self._drop_connection()
        for st in self.states:
            for tick in list(st.running):
                log.warning(
                    "schedule %s tick %s still running at exit", st.schedule.name, iso(tick),
                    extra=about(st.schedule.name),
                )  # fmt: skip


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def about(schedule: str) -> dict[str, str]:
    """The ``extra`` of a log record about one schedule (its ``schedule`` field in JSON logs)."""
    return {"schedule": schedule}
