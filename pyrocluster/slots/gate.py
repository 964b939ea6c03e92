"""Admission to a worker's slots across every coordinator: at most ``slots`` batches run, the
rest wait in :class:`pyrocluster.slots.admission.AdmissionOrder` (fair by calls between senders).
A sender may hold ``HELD_PER_SLOT * slots`` batches here, running or waiting; past that it alone
is answered busy, so a sender with nothing here is never turned away because others fill the queue.

A :class:`Ticket` is one batch on its way through: waiting, then running in a slot, then done; it
is also where ``cancel`` finds the batch, whichever of those states it is in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Protocol

from pyrocluster.protocol import HELD_PER_SLOT
from pyrocluster.slots.admission import AdmissionOrder


class Runner(Protocol):
    """What a running batch offers to ``cancel``: a slot process, or a thread slot's BatchRun."""

    def cancel(self, positions: Iterable[int]) -> None: ...


class Gate:
    """Counts the slots in use and queues the batches that wait for one."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.per_sender = HELD_PER_SLOT * slots
        """Batches one sender may hold here, running or waiting."""
        self._lock = threading.Lock()
        self._order: AdmissionOrder[Ticket] = AdmissionOrder()
        self._running = 0
        self._held: dict[str, int] = {}

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
            if self._running < self.slots:  # then nothing waits: this ticket starts at once
                self._order.start_now(sender, ticket.size)
                self._running += 1
                return True
            self._order.push(sender, ticket.priority, ticket.size, ticket)
            granted = ticket.granted = threading.Event()  # made only for a batch that waits
        granted.wait()
        return True

    def leave(self, ticket: Ticket) -> None:
        """``ticket``'s slot is free again: hand it to the next waiting ticket, if any."""
        with self._lock:
            self._let_go(ticket.sender)
            nxt = self._order.pop()
            if nxt is None:
                self._running -= 1
        if nxt is not None and nxt.granted is not None:
            nxt.granted.set()

    def drop(self, ticket: Ticket) -> bool:
        """Take a waiting ticket out of the queue; False when it is not waiting (any more)."""
        with self._lock:
            if not self._order.remove(ticket):
                return False
            self._let_go(ticket.sender)
            return True

    def _let_go(self, sender: str) -> None:
        left = self._held[sender] - 1
        if left:
            self._held[sender] = left
        else:
            del self._held[sender]

    def busy(self) -> int:
        """Slots in use (never more than ``slots``)."""
        return self._running

    def load(self) -> dict[str, int]:
        """``{"slots", "running", "queued"}``, counted in batches, across every coordinator."""
        with self._lock:
            return {"slots": self.slots, "running": self._running, "queued": len(self._order)}


class Ticket:
    """One batch of ``size`` calls from ``sender``, from admission until its slot is free again."""

    def __init__(self, gate: Gate, sender: str, priority: int, size: int) -> None:
        self.sender = sender
        self.priority = priority
        self.size = size
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
