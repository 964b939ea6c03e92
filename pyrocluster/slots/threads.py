"""Thread slots, for I/O-bound tasks: each batch runs on a daemon thread of its own.

A thread cannot be killed: a call that overruns its timeout (or is cancelled while it runs) is
answered at once and abandoned, and its slot stays counted busy until the thread really ends.
Daemon threads never keep a stopping worker alive.
"""

from __future__ import annotations

import threading

from pyrocluster.slots.batch import BatchRun, Budget, Call, Outcome
from pyrocluster.slots.gate import Ticket
from pyrocluster.tasks import load_task_module


class ThreadSlots:
    """``n`` slots served by threads of this process."""

    def __init__(self, n: int, task_modules: list[str]) -> None:
        for spec in task_modules:
            load_task_module(spec)
        self.total = n

    def run(self, calls: list[Call], budget: Budget, ticket: Ticket) -> list[Outcome]:
        """Run a batch on a new slot thread; returns when it ends, overruns or is cancelled."""
        run = BatchRun(calls, budget)
        run.cancel(ticket.attach(run))
        try:
            threading.Thread(target=self._body, args=(run, ticket), name="slot", daemon=True).start()
        except RuntimeError:  # no thread could be started: the slot is not taken after all
            ticket.detach()
            ticket.release()
            raise
        run.watch()
        ticket.detach()
        return run.outcomes

    @staticmethod
    def _body(run: BatchRun, ticket: Ticket) -> None:
        try:
            run.run()
        finally:
            ticket.release()  # only now: an abandoned call holds its slot until it really ends

    def close(self) -> None:
        """Nothing to stop: slot threads are daemons, and a stopping worker does not wait for them."""
