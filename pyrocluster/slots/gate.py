"""Admission to a worker's slots across every coordinator: at most ``slots`` batches run, the
rest wait in :class:`pyrocluster.slots.admission.AdmissionOrder` (fair by calls between senders).
A sender may hold ``HELD_PER_SLOT * slots`` batches here, running or waiting; past that it alone
is answered busy, so a sender with nothing here is never turned away because others fill the queue.

A batch also holds its ask of the worker's resources (SPEC 10) while it runs: it starts only
when a slot is free *and* its ask fits what is free, in the fair order, a call that does not fit
being passed over only within :class:`pyrocluster.resources.Patience`. A batch asking ``gpu: N``
is given N of the worker's device ids, its own until it ends.

A :class:`Ticket` is one batch on its way through: waiting, then running in a slot, then done; it
is also where ``cancel`` finds the batch, whichever of those states it is in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from pyrocluster.protocol import HELD_PER_SLOT
from pyrocluster.resources import CPU, DEFAULT_ASK, GPU, MEMORY, Ask, Patience
from pyrocluster.slots.admission import AdmissionOrder


class Runner(Protocol):
    """What a running batch offers to ``cancel``: a slot process, or a thread slot's BatchRun."""

    def cancel(self, positions: Iterable[int]) -> None: ...


class Gate:
    """Counts the slots and resources in use and queues the batches that wait for them."""

    def __init__(
        self,
        slots: int,
        totals: Mapping[str, float] | None = None,
        gpus: Sequence[str] = (),
        patience: Patience | None = None,
    ) -> None:
        self.slots = slots
        self.per_sender = HELD_PER_SLOT * slots
        """Batches one sender may hold here, running or waiting."""
        self.totals: Ask = {CPU: float(slots), **(totals or {})}
        if gpus:
            self.totals[GPU] = float(len(gpus))
        self._used: Ask = dict.fromkeys(self.totals, 0.0)
        self._gpus = list(gpus)
        """Device ids not held by a running batch."""
        self._patience = patience or Patience()
        self._lock = threading.Lock()
        self._order: AdmissionOrder[Ticket] = AdmissionOrder()
        self._running = 0
        self._held: dict[str, int] = {}
        self.on_waiting: Callable[[bool], None] | None = None
        """Told (under the gate's lock) when batches start waiting here, and when none waits any more."""
        self.direct: Callable[[], tuple[list[int], int, int]] | None = None
        """For :meth:`load` with process slots that lend to direct calls: the ports free for one,
        the slots batches hold and the direct calls running (``Lender.occupancy``)."""
        self._told_waiting = False

    def enter(self, ticket: Ticket) -> bool:
        """Take a slot for ``ticket``, waiting in the queue if need be; False when its sender
        already holds ``per_sender`` batches here.

        True also when the ticket was dropped while waiting (``ticket.dropped``): it holds no slot.
        """
        sender = ticket.sender
        with self._lock:
            held = self._held.get(sender, 0)
            if held >= self.per_sender:
                return False
            self._held[sender] = held + 1
            if not self._order and self._can_start(ticket):  # nothing waits: it starts at once
                self._order.start_now(sender, ticket.size)
                self._take(ticket)
                return True
            granted = ticket.granted = threading.Event()  # made only for a batch that waits
            ticket.since = self._patience.clock()
            self._order.push(sender, ticket.priority, ticket.size, ticket)
            self._start_waiting()
            self._tell_waiting()
        granted.wait()
        return True

    def leave(self, ticket: Ticket) -> None:
        """``ticket``'s slot and resources are free again: start what waiting tickets now fit."""
        with self._lock:
            self._let_go(ticket.sender)
            self._give_back(ticket)
            self._start_waiting()
            self._tell_waiting()

    def drop(self, ticket: Ticket) -> bool:
        """Take a waiting ticket out of the queue; False when it is not waiting (any more)."""
        with self._lock:
            if not self._order.remove(ticket):
                return False
            self._let_go(ticket.sender)
            self._start_waiting()  # it may have held back smaller asks
            self._tell_waiting()
            return True

    def _tell_waiting(self) -> None:
        """Tell ``on_waiting`` when whether batches wait here changed (lock held)."""
        waiting = bool(self._order)
        if waiting != self._told_waiting and self.on_waiting is not None:
            self._told_waiting = waiting
            self.on_waiting(waiting)

    def charge(self, sender: str, calls: int) -> None:
        """Count calls that ran outside the gate (direct calls) in ``sender``'s fair share."""
        with self._lock:
            self._order.start_now(sender, calls)

    def fits_totals(self, ask: Mapping[str, float]) -> bool:
        """True when ``ask`` could ever run here (it fits the totals)."""
        return all(amount <= self.totals.get(name, 0.0) for name, amount in ask.items())

    def _can_start(self, ticket: Ticket) -> bool:
        used, totals = self._used, self.totals
        return self._running < self.slots and all(
            amount <= totals.get(name, 0.0) - used.get(name, 0.0) for name, amount in ticket.ask.items()
        )

    def _may_pass(self, ticket: Ticket) -> bool:
        return self._patience.may_pass(ticket.since)

    def _start_waiting(self) -> None:
        """Start every waiting ticket that may start now, in the fair order (lock held)."""
        while self._order:
            nxt = self._order.pop(self._can_start, self._may_pass)
            if nxt is None:
                return
            self._take(nxt)
            if nxt.granted is not None:
                nxt.granted.set()

    def _take(self, ticket: Ticket) -> None:
        self._running += 1
        used = self._used
        for name, amount in ticket.ask.items():
            used[name] = used.get(name, 0.0) + amount
        wanted = int(ticket.ask.get(GPU, 0))
        if wanted:
            ticket.gpus, self._gpus = self._gpus[:wanted], self._gpus[wanted:]

    def _give_back(self, ticket: Ticket) -> None:
        self._running -= 1
        used = self._used
        for name, amount in ticket.ask.items():
            used[name] -= amount
        self._gpus.extend(ticket.gpus)
        ticket.gpus = []

    def _let_go(self, sender: str) -> None:
        left = self._held[sender] - 1
        if left:
            self._held[sender] = left
        else:
            del self._held[sender]

    def busy(self) -> int:
        """Slots in use (never more than ``slots``)."""
        return self._running

    def load(self) -> dict[str, Any]:
        """``{"slots", "running", "queued"}`` across every coordinator, and ``"used"``, the
        resources running batches hold, unless that is just ``cpu: running`` (every batch asking
        the default: the common reply stays as small as it was). ``running`` counts the slots that
        run a batch or a direct call; a batch admitted while a direct call holds its slot counts
        as queued until the slot is its own."""
        with self._lock:
            running, queued = self._running, len(self._order)
            used = {name: amount for name, amount in self._used.items() if amount > 0}
            load: dict[str, Any] = {"slots": self.slots}
            if used and used != {CPU: running}:
                load["used"] = used
            if self.direct is not None:
                ports, in_slots, direct = self.direct()
                queued += max(0, running - in_slots)
                running = min(self.slots, in_slots + direct)
                if ports:
                    load["direct"] = ports
            load["running"], load["queued"] = running, queued
            return load

    def resources(self) -> dict[str, dict[str, float]]:
        """``{name: {"total", "used"}}`` for every resource of this worker."""
        with self._lock:
            return {n: {"total": t, "used": self._used.get(n, 0.0)} for n, t in sorted(self.totals.items())}


class Ticket:
    """One batch of ``size`` calls from ``sender``, from admission until its slot is free again."""

    def __init__(
        self, gate: Gate, sender: str, priority: int, size: int, ask: Mapping[str, float] | None = None
    ) -> None:
        self.sender = sender
        self.priority = priority
        self.size = size
        self.ask = ask if ask is not None else DEFAULT_ASK
        """What it holds of the worker's resources while it runs (its calls' largest asks)."""
        self.gpus: list[str] = []
        """The device ids it holds while it runs."""
        self.since = 0.0
        """When it started waiting (the gate's clock)."""
        self.granted: threading.Event | None = None
        """Set when a waiting batch gets its slot (or is dropped); made when it starts waiting."""
        self.dropped = False
        """Every call was cancelled while the batch waited: it never took a slot."""
        self._gate = gate
        self._lock = threading.Lock()
        self._skip: set[int] = set()
        self._runner: Runner | None = None
        self._finished = False
        self._released = False

    def limits(self) -> dict[str, Any]:
        """What a process slot applies while the batch runs (see :mod:`pyrocluster.slots.limits`):
        ``memory`` asked, and ``gpus``, the ids it holds, on a worker that has any."""
        held: dict[str, Any] = {}
        if MEMORY in self.ask:
            held["memory"] = self.ask[MEMORY]
        if GPU in self._gate.totals:
            held["gpus"] = ",".join(self.gpus)
        return held

    def started(self) -> bool:
        """True once the batch has a slot (running or done); False while it waits."""
        with self._lock:
            return self._runner is not None or self._finished

    def attach(self, runner: Runner) -> set[int]:
        """The batch starts in ``runner``; returns the positions cancelled before that."""
        with self._lock:
            self._runner = runner
            return set(self._skip)

    def detach(self) -> None:
        """The batch has its outcomes: ``cancel`` finds nothing more here."""
        with self._lock:
            self._runner = None
            self._finished = True

    def cancel(self, positions: set[int]) -> int:
        """Stop these calls wherever the batch is; how many were still unfinished."""
        with self._lock:
            if self._finished:
                return 0
            if self._runner is not None:
                self._runner.cancel(positions)
                return len(positions)
            self._skip |= positions
            if len(self._skip) >= self.size and self._gate.drop(self) and self.granted is not None:
                self.dropped = True
                self.granted.set()
            return len(positions)

    def release(self) -> None:
        """Give the slot back (once, whoever calls)."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self._gate.leave(self)
