"""The direct path, in the worker: which idle slots are lent to direct calls, and their supervision.

A slot is lent while it is idle, its process is up, nothing waits at the gate and the worker is
not draining; it is taken back (:meth:`SlotShare.hold`, atomic with the slot's own claim) for
every batch. A batch that finds every idle slot running a direct call waits for the first of
those calls to end (it was admitted first, as a batch admitted before it would be).

One supervisor thread reads what idle slots tell it (the records of ended direct calls, kept in
the share and read in bulk: counted in
the worker's counters and charged to its sender in the gate's fair order; a direct call started
while nobody watched deadlines; the process is up), and while direct calls run it kills one past
its timeout plus ``FALLBACK_GRACE_S`` (a task that holds the interpreter lock, whose timer cannot
act), as a batch's watcher would. A slot whose process ends during a direct call is replaced (a
new port) and the call gets the outcome ``run_batch`` gives (TIMEOUT, CANCELLED, CRASHED, or its
own when it was logged), kept for the coordinator to ask (:meth:`Lender.outcome_of`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import select
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from pyrocluster.protocol import CANCELLED, TIMEOUT
from pyrocluster.slots.batch import Budget, Call, Outcome
from pyrocluster.slots.direct import ENDED, STARTED
from pyrocluster.slots.gate import Ticket
from pyrocluster.slots.process import FALLBACK_GRACE_S, READY, SlotProcess
from pyrocluster.slots.share import PORT, TOLD

log = logging.getLogger(__name__)

WATCH_TICK_S = 0.1
"""How often the supervisor looks at direct calls' deadlines while any runs."""
WATCH_IDLE_S = 2.0
"""How long it keeps looking after the last direct call it saw running."""
KEPT_OUTCOMES = 1024
"""Outcomes of direct calls whose process ended, kept for their coordinators to ask."""
OUTCOME_WAIT_S = 5.0
"""Longest an ask for an outcome waits for the end of the process that runs the call."""

Ended = Callable[[str, str, list[int], list[float]], None]
"""Told ``(sender, task, kinds, elapsed_ms)`` of direct calls of one task that ended."""


class Lender:
    """The idle slots of a :class:`~pyrocluster.slots.process.ProcessSlots`, lent or not."""

    def __init__(self, slots: list[SlotProcess]) -> None:
        self._slots = slots
        self._idle = list(slots)
        self._cond = threading.Condition()
        self._gate_waiting = False
        self._draining = False
        self.ports: list[int] = []
        """Ports of the slots lent now (the worker's load carries them)."""
        self.on_ended: Ended | None = None
        self._outcomes: OrderedDict[tuple[str, str], list[Outcome]] = OrderedDict()
        """The outcomes of direct calls whose process ended, by sender and (first) call id."""
        self._ending: set[tuple[str, str]] = set()
        """Direct calls whose process ended, their outcomes not decided yet."""
        self._parked: set[SlotProcess] = set()
        """Slots whose pipe the supervisor left alone: a batch was reading it."""
        self._polled: set[int] = set()
        """The pipes the supervisor watches now."""
        self._watching = False
        self._seen_running = 0.0
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._supervise, name="slot-supervisor", daemon=True)
        self._thread.start()

    # -- lending ----------------------------------------------------------------------------

    def _lending(self) -> bool:
        return not (self._gate_waiting or self._draining or self._closed)

    def _relend(self) -> None:
        """Lend each idle slot whose process is up, or take all back; list their ports (cond held)."""
        on = self._lending()
        ports = []
        for slot in self._idle:
            lent = on and slot.share.progress[PORT] > 0  # its endpoint listens
            slot.share.lend(lent)
            if lent:
                ports.append(int(slot.share.progress[PORT]))
        self.ports = ports

    def gate_waiting(self, waiting: bool) -> None:
        """The gate has batches waiting (lend nothing) or none any more."""
        with self._cond:
            self._gate_waiting = waiting
            self._relend()

    def draining(self, draining: bool) -> None:
        """The worker drains (lend nothing) or takes work again."""
        with self._cond:
            self._draining = draining
            self._relend()

    def running(self) -> int:
        """How many direct calls run now."""
        with self._cond:
            return sum(slot.share.direct_call() is not None for slot in self._idle)

    def in_use(self) -> int:
        """Slots in use now: taken by a batch or running a direct call. A batch the gate admitted
        that still waits for a direct call to end holds no slot, so this never exceeds the slots."""
        _, batches, direct = self.occupancy()
        return batches + direct

    def occupancy(self) -> tuple[list[int], int, int]:
        """The ports of lent slots free for a direct call, the slots batches hold, and the direct
        calls running: what the worker's load says, so that every coordinator sees a slot that
        runs a direct call as taken."""
        with self._cond:
            lent = set(self.ports)
            free, direct = [], 0
            for slot in self._idle:
                with contextlib.suppress(ValueError):  # a share closed as its slot was replaced
                    if slot.share.direct_call() is not None:
                        direct += 1
                    elif (port := int(slot.share.progress[PORT])) in lent:
                        free.append(port)
            return free, len(self._slots) - len(self._idle), direct

    # -- batches ----------------------------------------------------------------------------

    def run(self, calls: list[Call], budget: Budget, ticket: Ticket) -> list[Outcome]:
        """Run a batch in an idle slot taken back from direct calls."""
        slot = self._take()
        try:
            with slot.pipe_lock:
                if slot.share.progress[TOLD] != slot.told_seen or not slot._ready:
                    self._read(slot)  # what it said between batches comes before the batch's reply
                else:
                    self._fold(slot)  # its direct calls count before the batch's
                return slot.execute(calls, budget, ticket)
        finally:
            # The ticket first: the gate's load counts a batch admitted but without a slot as
            # queued, so a slot given back before its ticket showed one batch twice (running
            # and queued). The next batch admitted meanwhile waits in _take for this slot.
            ticket.release()
            self._give_back(slot)

    def _take(self) -> SlotProcess:
        with self._cond:
            while True:
                for slot in reversed(self._idle):
                    if slot.share.hold():
                        self._idle.remove(slot)
                        self._relend()
                        return slot
                # Every idle slot runs a direct call, each now asked back: the first to end is ours.
                self._cond.wait(WATCH_TICK_S)

    def _give_back(self, slot: SlotProcess) -> None:
        with self._cond:
            self._idle.append(slot)
            self._relend()
            self._cond.notify_all()
            wake = slot in self._parked or slot.conn.fileno() not in self._polled  # replaced
            self._parked.discard(slot)
        if wake:
            self._wake()

    # -- cancel and outcomes ----------------------------------------------------------------

    def cancel(self, sender: str, call_ids: set[str]) -> int:
        """Stop these direct calls of ``sender`` (:meth:`SlotShare.kill_direct`); how many were
        found."""
        with self._cond:
            return sum(
                slot.share.kill_direct(sender, call_ids, functools.partial(slot._kill, CANCELLED))
                for slot in self._idle
            )

    def outcome_of(self, sender: str, call_id: str) -> list[Outcome] | None:
        """The outcomes of the direct calls whose process ended under them (a lone call, or the
        batch whose first call is ``call_id``), once the supervisor has them; None when no slot
        ran them into its end (they never started, or they finished and were answered)."""
        until = time.monotonic() + OUTCOME_WAIT_S
        with self._cond:
            while True:
                found = self._outcomes.get((sender, call_id))
                if found is not None:
                    return found
                running = (sender, call_id) in self._ending or any(
                    (who := slot.share.direct_call()) is not None and who[:2] == [sender, call_id]
                    for slot in self._idle
                )
                left = until - time.monotonic()
                if not running or left <= 0:
                    return None
                self._cond.wait(min(left, WATCH_TICK_S))

    def publish_revocations(self, revoked: Mapping[str, int]) -> None:
        """Hand the worker's revocations to every slot process (and to the processes to come)."""
        data = msgpack.packb(dict(revoked))
        version = time.time()
        with self._cond:
            for slot in self._slots:
                slot.revocations = (data, version)
                if not slot.share.write_revocations(data, version):
                    log.warning("too many revocations for the slots' direct calls: lending stops")
                    self._draining = True
            self._relend()

    # -- the supervisor ---------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _supervise(self) -> None:
        while not self._closed:
            with self._cond:
                by_fd = {slot.conn.fileno(): slot for slot in self._idle if slot not in self._parked}
                self._polled = set(by_fd)
                # A new slot process opens its endpoint once idle: look for its port meanwhile.
                unlisted = any(slot.share.progress[PORT] == 0 for slot in self._idle)
                self._relend()
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            for fd in by_fd:
                poller.register(fd, select.POLLIN)
            try:
                events = poller.poll(WATCH_TICK_S * 1000 if self._watching or unlisted else None)
            except OSError:
                events = []
            for fd, _ in events:
                if fd == self._wake_r.fileno():
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    continue
                slot = by_fd[fd]
                if not self._serve(slot):
                    with self._cond:
                        self._parked.add(slot)
            if self._watching:
                self._watch()

    def _serve(self, slot: SlotProcess) -> bool:
        """Read what an idle slot said; False when it is not idle (a batch reads its pipe)."""
        with self._cond:
            if slot not in self._idle or not slot.pipe_lock.acquire(blocking=False):
                return False
        try:
            self._read(slot)
        finally:
            slot.pipe_lock.release()
        return True

    def _read(self, slot: SlotProcess) -> None:
        """Everything the slot has said (its pipe lock held); replace its process if it ended."""
        ended: list[list[Any]] = []
        try:
            while slot._poller.poll(0):
                message = slot.conn.recv_bytes()
                if message == READY:
                    slot._ready = True
                elif message == STARTED:
                    slot.told_seen += 1
                    self._start_watching()
                elif message == ENDED:
                    slot.told_seen += 1
        except (EOFError, OSError):
            ended += self._died(slot)
        with self._cond:
            self._cond.notify_all()  # a batch may wait for this slot
        self._tell_ended(ended + slot.share.take_ended())

    def _fold(self, slot: SlotProcess) -> None:
        """Count the direct calls that ended in ``slot`` since the last look."""
        self._tell_ended(slot.share.take_ended())

    def fold(self) -> None:
        """Count every direct call that ended (before the worker's counters are read)."""
        with self._cond:
            shares = [slot.share for slot in self._slots]
        ended: list[list[Any]] = []
        for share in shares:
            with contextlib.suppress(ValueError):  # a share closed as its slot was replaced
                ended += share.take_ended()
        self._tell_ended(ended)

    def _tell_ended(self, ended: list[list[Any]]) -> None:
        """Count ended records: ``[sender, task, kind, ms]`` of a lone call, ``[sender, task,
        kinds, ms]`` of a batch (the kinds as bytes, the ms as a list)."""
        if ended and self.on_ended is not None:
            for sender, task, kinds, elapsed_ms in ended:
                if type(kinds) is bytes:
                    self.on_ended(sender, task, list(kinds), elapsed_ms)
                else:
                    self.on_ended(sender, task, [kinds], [elapsed_ms])

    def _died(self, slot: SlotProcess) -> list[list[Any]]:
        """Replace a slot process that ended; the direct call it ran, if any, as ``ended``."""
        who = slot.share.direct_call()
        self._fold(slot)
        if who is None:
            slot.replace()
            with self._cond:
                self._relend()
            return []
        sender, call_id, task = who[:3]
        calls = len(who[3]) if len(who) > 3 else 1
        with self._cond:
            self._ending.add((sender, call_id))  # an ask waits for it while the share is replaced
        outcomes = slot.replace_after_direct(calls)
        with self._cond:
            self._ending.discard((sender, call_id))
            self._outcomes[(sender, call_id)] = outcomes
            while len(self._outcomes) > KEPT_OUTCOMES:
                self._outcomes.popitem(last=False)
            self._relend()
        return [[sender, task, bytes(o[0] for o in outcomes), [o[2] for o in outcomes]]]

    def _start_watching(self) -> None:
        self._watching = True
        self._seen_running = time.monotonic()
        with self._cond:
            for slot in self._slots:
                slot.share.watch(True)

    def _watch(self) -> None:
        """Kill a direct call past its fallback deadline; stop watching once none has run a while."""
        now = time.monotonic()
        with self._cond:
            for slot in self._idle:
                if slot.share.direct_call() is not None:
                    self._seen_running = now
                    slot.share.kill_overdue(now, FALLBACK_GRACE_S, functools.partial(slot._kill, TIMEOUT))
            if now - self._seen_running < WATCH_IDLE_S:
                return
            stopped = [slot.share.watch(False) for slot in self._slots]
            if all(stopped):
                self._watching = False
            else:
                for slot in self._slots:
                    slot.share.watch(True)

    def close(self) -> None:
        """Stop the supervisor and every slot process."""
        with self._cond:
            self._closed = True
            self._relend()
        self._wake()
        self._thread.join(timeout=2)
        for slot in self._slots:
            slot.close()
        self._wake_r.close()
        self._wake_w.close()
