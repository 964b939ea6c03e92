"""The long-running scheduler: leads schedules, claims and fires their ticks, records every decision.

One thread (``serve``) does every name-server call, with one proxy; each fired tick runs in a
thread of its own through :func:`pyrocluster.jobs.submit.submit_job`, exactly as ``submit``
would run the job, and reports back through a queue. A leader counts the runs of the leaders
before it as running (``overlap`` holds across a takeover) until their end is recorded, by
their own scheduler or, once that one is known dead, as ``lost`` (see ``takeover``).
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
from dataclasses import astuple
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import Pyro5.errors

from pyrocluster.config import Settings
from pyrocluster.errors import ClusterUnreachable, ConfigError
from pyrocluster.nameserver import registry
from pyrocluster.nameserver import schedules as entries
from pyrocluster.nameserver.pauses import paused_schedules
from pyrocluster.scheduler import claims, store
from pyrocluster.scheduler.journal import StateFile, append_tick, tick_line
from pyrocluster.scheduler.lease import LEASE_TTL_S, Leadership
from pyrocluster.scheduler.ledger import Fenced, Ledger
from pyrocluster.scheduler.runs import Finished, RunJob, TickRuns, about, run_tick_job
from pyrocluster.scheduler.spec import Schedule
from pyrocluster.scheduler.state import SchedulerOptions, ScheduleState, parse_iso, utc_now
from pyrocluster.scheduler.store import Claim, End
from pyrocluster.scheduler.takeover import RunOwners, process_alive, process_started
from pyrocluster.scheduler.ticks import (
    FIRE,
    QUEUE,
    iso,
    iter_ticks,
    plan,
    ticks_between,
)

log = logging.getLogger(__name__)

ROUND_S = 1.0
"""Seconds between lease rounds (renew or watch) when no tick is due sooner."""
WATCH_S = 0.1
"""Seconds between a standby's looks at its leases between rounds (one handed over is taken at once)."""
PUBLISH_S = 2.0
"""Seconds between refreshes of what ``status`` shows."""
PRUNE_MARGIN_S = 600.0
"""Claims are kept for ``catchup`` plus this many seconds behind the newest decision."""
PRUNE_PER_ROUND = 20
"""Old claims removed per round at most (pruning stays in the background)."""
CANCEL_GRACE_S = 15.0
"""Seconds cancelled runs have to end after ``--drain-timeout``."""
STUCK_ROUND_S = 10.0
"""A loop that has not finished a round for this long is stuck (a round's calls time out in 2 s)."""
LOST = "lost"
"""Run status of a tick whose scheduler died while it ran."""
CLAIMS_FOLDER = "claims"
"""The claims folder's name, beside ``ticks.jsonl``."""


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
        run_job: RunJob = run_tick_job,
        alive: Callable[[int, float], bool] = process_alive,
    ) -> None:
        self.settings = settings
        self.options = options
        self.name = options.resolved_name()
        if not self.name or any(c.isspace() or c in ":|" for c in self.name):
            raise ConfigError(f"--name {self.name!r}: must be non-empty, without spaces, ':' or '|'")
        self.instance = f"{self.name}.{secrets.token_hex(3)}"
        self._wall, self._clock = wall, clock
        self._connect = connect or (lambda: registry.connect(settings, timeout_s=2.0))
        self.states = [
            ScheduleState(
                s, Leadership(s.name, self.instance, self.name), Ledger(s.ticks_log().parent / CLAIMS_FOLDER)
            )
            for s in schedules
        ]
        self.process = entries.Process(socket.gethostname(), os.getpid(), process_started())
        self._owners = RunOwners(self.process.host, alive)
        self._statefile = StateFile(Path(options.state_path))
        self._ns: Any = None
        self._pending: list[Finished] = []
        self._wake = threading.Event()
        self._runs = TickRuns(settings, options.wait_s, run_job, self._wake)
        self._finished = self._runs.finished
        self._published = float("-inf")
        self._paused: set[str] = set()
        """Schedules an operator paused (``pyrocluster schedule pause``), read every round."""
        self.last_round = clock()
        """Clock time the last round ended (liveness: the loop goes round)."""
        self.reached_ns = False
        """Whether the last round reached the name server (readiness: it can lead or stand by)."""
        self._ns_outage_logged = False
        """Whether the name server's being out of reach was logged (once an outage)."""

    def start(self) -> None:
        """Connect to the name server (ClusterUnreachable when it is not there) and announce ourselves.

        ConfigError when a live scheduler already runs under our name.
        """
        self._ns = self._connect()
        listing = self._ns.list(prefix=entries.SCHEDULER_PREFIX, return_metadata=True)
        for other in entries.schedulers_named(listing, self.name, time.time()):
            if other.host != self.process.host or self._owners.alive(other.pid, other.started):
                raise ConfigError(
                    f"--name {self.name}: a scheduler of that name is running (host {other.host}, "
                    f"pid {other.pid}); give each scheduler its own --name"
                )
        try:
            self._statefile.check()
        except OSError as exc:
            raise ConfigError(
                f"--state {self._statefile.path}: cannot be written: {exc.strerror or exc}"
            ) from None
        known = self._statefile.load()
        for st in self.states:
            mark = known.get(st.schedule.name)
            if mark:
                st.watermark = parse_iso(mark["tick"])
                st.last_fire, st.last_status = mark.get("fire", ""), mark.get("status", "")
        self._publish(force=True)

    # -- the loop ------------------------------------------------------------------------

    def serve(self, stop: threading.Event) -> None:
        """Lead and fire until ``stop``; then let running ticks finish (or cancel them) and hand over."""
        drain_until: float | None = None
        cancel_until: float | None = None
        # A signal wakes the loop at once: the lease is handed over now, not at the next round.
        threading.Thread(target=self._wake_on, args=(stop,), name="stop-wake", daemon=True).start()
        while True:
            if stop.is_set():
                if drain_until is None:
                    drain_until = self._clock() + self.options.drain_timeout_s
                    self._hand_over()
                if not self._busy():
                    break
                if cancel_until is None and self._clock() >= drain_until:
                    log.warning("drain timeout: cancelling %d running tick(s)", self._running_count())
                    self._runs.cancel.set()
                    cancel_until = self._clock() + CANCEL_GRACE_S
                if cancel_until is not None and self._clock() >= cancel_until:
                    break
            self.run_round(deciding=not stop.is_set())
            self._between_rounds(self._sleep_s(), watch=not stop.is_set())
        self._shutdown()

    def _wake_on(self, stop: threading.Event) -> None:
        stop.wait()
        self._wake.set()

    def _between_rounds(self, wait_s: float, watch: bool) -> None:
        """Wait ``wait_s`` for the next round, or less: woken (a run ended, a signal), or, when
        ``watch``, a lease we stand by for was handed over (its leader drains): take it now."""
        deadline = self._clock() + wait_s
        while (left := deadline - self._clock()) > 0:
            watching = watch and self.reached_ns and any(not st.lease.leading for st in self.states)
            if self._wake.wait(min(left, WATCH_S) if watching else left):
                break
            try:
                if watching and any(
                    st.lease.released(self._ns) for st in self.states if not st.lease.leading
                ):
                    break
            except (Pyro5.errors.PyroError, ClusterUnreachable, OSError):
                break  # the round says what went wrong
        self._wake.clear()

    def _hand_over(self) -> None:
        """Draining: release every lease at once; decide nothing more (queued ticks go to the standby)."""
        for st in self.states:
            st.queued.clear()
            st.foreign.clear()
        try:
            ns = self._connected()
            for st in self.states:
                st.lease.release(ns)
        except (Pyro5.errors.PyroError, ClusterUnreachable, OSError) as exc:
            log.warning("could not hand the leases over (they run out in %.0f s): %s", LEASE_TTL_S, exc)
            for st in self.states:
                st.lease.step_down()

    def _state_of(self, schedule: str) -> ScheduleState:
        return next(st for st in self.states if st.schedule.name == schedule)

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
            self._paused = paused_schedules(ns)
            self._collect_finished(ns)
            for st in self.states:
                self._step(ns, st, deciding)
            self._publish()
            if self._ns_outage_logged:
                log.warning("name server at %s reached again", self.settings.ns_address)
                self._ns_outage_logged = False
            self.reached_ns = True
        except (Pyro5.errors.PyroError, ClusterUnreachable, OSError) as exc:
            if not self._ns_outage_logged:  # once an outage, not every round (one a second) while it lasts
                log.warning("name server at %s: %s (retrying every round)", self.settings.ns_address, exc)
                self._ns_outage_logged = True
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
        if not deciding:
            return  # draining: the lease is handed over
        was_leading = st.lease.leading
        leading = st.lease.step(ns, self._clock(), self._wall(), st.ledger.fence())
        now = self._wall()
        if leading and not was_leading:
            leading = self._take_over(ns, st, now)
        elif leading and st.lease.retaken:
            self._save_watermark(ns, st)  # the name server forgot it too: a standby starts from it
        if st.schedule.name in self._paused:
            st.paused_seen = now
        self._say_role(st)
        if not leading:
            st.queued.clear()
            st.foreign.clear()
            return
        if ahead := st.ahead(now):
            log.warning("%s", ahead, extra=about(st.schedule.name))
        if st.schedule.name in self._paused:
            return  # a paused schedule's ticks wait for its misfire rule once it is resumed
        self._watch_foreign(ns, st)
        since = st.missed_before()
        assert st.watermark is not None and since is not None
        after = max([st.watermark, *st.queued[-1:]])
        due = ticks_between(st.schedule.timing, after, now)
        if not due and not (st.queued and not st.busy):
            return
        # Ticks that came due while nobody led, or while the schedule was paused, are missed.
        actions = plan(due, st.queued, now, since, st.busy, st.policy)
        st.queued = [a.tick for a in actions if a.kind == QUEUE]
        for action in actions:
            if action.kind == QUEUE:
                continue
            if not self._decide(ns, st, action.tick, "fired" if action.kind == FIRE else action.kind):
                self._wake.set()  # somebody else decided it, or we lost the lease: look again at once
                break
        self._prune(ns, st)

    def _take_over(self, ns: Any, st: ScheduleState, now: datetime) -> bool:
        """We just became leader: raise the fence, start after the newest decision anyone recorded,
        and take over the watch of the other schedulers' runs. False when a newer leader exists."""
        if not st.lease.token or not st.ledger.raise_fence(st.lease.token):
            st.lease.step_down()
            return False
        mark = store.read_watermark(ns, st.schedule.name)
        if mark is not None and mark.tick:
            theirs = parse_iso(mark.tick)
            if st.watermark is None or theirs > st.watermark:
                st.watermark, st.last_fire, st.last_status = theirs, mark.fire, mark.status
        st.watermark = max((t for t in (st.watermark, st.ledger.newest()) if t is not None), default=None)
        if st.watermark is None:
            st.watermark = now.replace(microsecond=0)  # a new schedule starts now
        st.foreign = {
            t: c for t, c in claims.unended(ns, st.ledger, st.schedule.name).items() if c.by != self.instance
        }
        retention = timedelta(seconds=st.schedule.catchup_s + PRUNE_MARGIN_S)
        st.pruned_to = st.watermark - 2 * retention
        st.ledger.forget_before(st.pruned_to)
        self._save_watermark(ns, st)
        return True

    def _say_role(self, st: ScheduleState) -> None:
        """Log our part in the schedule when it changes: leading, or standing by (and for whom)."""
        if st.lease.role != st.role:
            log.info("schedule %s: %s", st.schedule.name, st.lease.role, extra=about(st.schedule.name))
            st.role = st.lease.role

    def _watch_foreign(self, ns: Any, st: ScheduleState) -> None:
        """Forget the other schedulers' runs that ended; record as lost those whose scheduler is dead."""
        mono = self._clock()
        for tick, claim in sorted(st.foreign.items()):
            if claims.ended(ns, st.ledger, st.schedule.name, tick):
                del st.foreign[tick]
                continue
            if not self._owners.local(claim):
                self._owners.observe(claim.by, entries.published_at(ns, claim.by), mono)
            if self._owners.dead(claim, mono):
                self._record_end(ns, st, tick, claim, LOST)  # raises on a name-server error: retried
                del st.foreign[tick]
        self._owners.forget({c.by for s in self.states for c in s.foreign.values()})
        if st.queued and not st.busy:
            self._wake.set()

    def _decide(self, ns: Any, st: ScheduleState, tick: datetime, decision: str) -> bool:
        """Claim ``tick`` with ``decision``; fire or record it. False when it was already decided."""
        if not st.lease.fresh(self._clock()) and not (
            st.lease.step(ns, self._clock(), self._wall(), st.ledger.fence())
            and st.lease.fresh(self._clock())
        ):
            return False  # our last renewal is old (were we paused?): decide nothing before a new round
        at = iso(self._wall())
        claim = Claim(decision, self.instance, self.name, st.lease.token or 0, at, *astuple(self.process))
        try:
            held = claims.claim_tick(ns, st.ledger, st.schedule.name, tick, claim)
        except Fenced as exc:
            log.warning("schedule %s: a newer leader exists (%s): standing by", st.schedule.name, exc)
            st.lease.step_down()
            return False
        st.watermark = max(st.watermark or tick, tick)
        if held is not None:
            self._save_watermark(ns, st)
            return False
        log.info("schedule %s tick %s: %s", st.schedule.name, iso(tick), decision)
        if decision == "fired":
            st.last_fire, st.last_status = iso(tick), "running"
            self._save_watermark(ns, st)
            st.running[tick] = self._runs.start(st.schedule, tick, claim)
        else:
            append_tick(
                st.schedule.ticks_log(), tick_line(st.schedule.name, iso(tick), decision, self.name, None, at)
            )
            self._save_watermark(ns, st)
        return True

    def _record_end(
        self, ns: Any | None, st: ScheduleState, tick: datetime, claim: Claim, status: str
    ) -> None:
        """Record how a fired tick's run ended, once: the line is written only by whoever records it first."""
        held = claims.end_run(ns, st.ledger, st.schedule.name, tick, End(status, self.instance))
        if held is not None:
            log.warning(
                "schedule %s tick %s ended (%s) after %s was recorded",
                st.schedule.name,
                iso(tick),
                status,
                held.status,
            )
            return
        line = tick_line(st.schedule.name, iso(tick), "fired", claim.name, status, claim.at)
        append_tick(st.schedule.ticks_log(), line)
        log.info("schedule %s tick %s: run ended %s", st.schedule.name, iso(tick), status)
        if st.last_fire == iso(tick):
            st.last_status = status
        if status == LOST:
            log.warning(
                "schedule %s tick %s: its scheduler %s died while it ran",
                st.schedule.name,
                iso(tick),
                claim.name,
                extra=about(st.schedule.name),
            )

    def _save_watermark(self, ns: Any, st: ScheduleState) -> None:
        assert st.watermark is not None
        mark = store.Watermark(iso(st.watermark), st.last_fire, st.last_status, self.name)
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
            st.ledger.forget(old)
            st.pruned_to = old[-1]

    # -- runs ----------------------------------------------------------------------------

    def _collect_finished(self, ns: Any) -> None:
        while True:
            try:
                self._pending.append(self._finished.get_nowait())
            except queue.Empty:
                break
        while self._pending:
            self._record_finished(ns, self._pending[0])
            self._pending.pop(0)

    def _record_finished(self, ns: Any | None, done: Finished) -> None:
        """Record the end of one of our runs (``ns`` None: the name server is gone at exit)."""
        st, tick = self._state_of(done.schedule), done.tick
        self._record_end(ns, st, tick, done.claim, done.status)
        st.running.pop(tick, None)
        if ns is not None and st.lease.leading:
            self._save_watermark(ns, st)
        elif st.watermark is not None and st.last_fire == iso(tick):
            # It ended after the lease was handed over (a drain): say how, or the standby and a
            # restart here show it "running" until the next fire (a newer tick is never replaced).
            if ns is not None:
                self._save_watermark(ns, st)
            else:
                mark = {"tick": iso(st.watermark), "fire": st.last_fire, "status": st.last_status}
                self._statefile.save({st.schedule.name: mark})
        if st.queued and not st.busy:
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
                    if st.adopt(mark):
                        self._statefile.save(
                            {st.schedule.name: {"tick": mark.tick, "fire": mark.fire, "status": mark.status}}
                        )
                elif st.watermark is not None and mark is None:
                    self._save_watermark(ns, st)  # the name server forgot (memory storage restarted)
            shown.append(st.status_row(now))
        entries.publish(ns, self.instance, self.name, self.process, time.time(), shown)
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
            entries.unpublish(ns, self.instance)
        except (Pyro5.errors.PyroError, ClusterUnreachable, OSError) as exc:
            log.warning("could not hand over cleanly: %s", exc)
            for done in self._pending:
                self._record_finished(None, done)
        finally:
            self._drop_connection()
        for st in self.states:
            for tick in list(st.running):
                log.warning(
                    "schedule %s tick %s still running at exit", st.schedule.name, iso(tick),
                    extra=about(st.schedule.name),
                )  # fmt: skip
