"""Process slots: one child process per slot, reached on its own persistent pipe.

Children come from a ``forkserver`` (``spawn`` where there is none): a clean, single-threaded
server that has imported this module forks each one, so a slot killed for an overrun or a
cancel is replaced in tens of milliseconds, not the second a fresh interpreter takes.

One message goes each way per batch. Inside the child, the main thread runs the calls one after
another, each under a one-shot timer set to its own timeout: when one fires, its handler sends
the finished outcomes, TIMEOUT for that call and NOT_RUN for the rest, and ends the process,
which the parent replaces. The parent keeps a fallback deadline (the call's own timeout plus a
grace) for a task that holds the interpreter lock in C code, where no handler can run: it reads
the index and start time of the call in progress from shared memory (no message per call), so
a kill (fallback or ``cancel``) or a crash fails only the call that was running.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection
from typing import Any

from pyrocluster import codec
from pyrocluster.protocol import CANCELLED, CRASHED, NOT_RUN, TIMEOUT
from pyrocluster.slots.batch import (
    BatchRun,
    Budget,
    Call,
    Outcome,
    cancelled,
    encoded_failure,
    lost_outcomes,
    not_run,
)
from pyrocluster.slots.gate import Ticket
from pyrocluster.tasks import load_task_module

READY = b"ready"
"""The first message of a slot process: its task modules are loaded."""
STARTUP_TIMEOUT_S = 60.0
"""Seconds a new slot process may take to load its task modules."""
FALLBACK_GRACE_S = 0.5
"""Seconds past a call's own timeout before the parent kills a slot whose timer could not act."""


def _exit_with_parent(interval_s: float = 1.0) -> None:
    """End this slot process soon after its worker is gone (SIGKILLed), even mid-task."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _CallTimer:
    """One real-time timer (``setitimer``, SIGALRM) for the deadline of the call in progress.

    It is armed again only when it would go off too late for a new call. Calls of equal timeouts
    start later and later, so a batch of quick calls arms it about once per timeout, not once
    per call: when it goes off early, :meth:`fired` arms it for the current call's deadline.
    """

    def __init__(self) -> None:
        self.position = -1
        self._deadline = math.inf
        self._fires_at = math.inf

    def start(self, position: int, deadline: float) -> None:
        """Call ``position`` of the batch started; it must end by ``deadline`` (monotonic)."""
        self.position, self._deadline = position, deadline
        if deadline < self._fires_at:
            self._arm(deadline)

    def stop(self) -> None:
        """No call is in progress (an armed timer that goes off later does nothing)."""
        self.position, self._deadline = -1, math.inf

    def fired(self) -> bool:
        """The timer went off: True when the call in progress is past its deadline, else re-armed."""
        self._fires_at = math.inf
        if self.position < 0:
            return False
        if time.monotonic() >= self._deadline:
            return True
        self._arm(self._deadline)
        return False

    def _arm(self, at: float) -> None:
        self._fires_at = at
        signal.setitimer(signal.ITIMER_REAL, max(at - time.monotonic(), 1e-6))


def _child_main(conn: Connection, task_modules: list[str], progress: Any) -> None:
    """Body of a slot process: load the user's tasks, then run batches until the pipe closes.

    The main thread's SIGALRM handler (see :class:`_CallTimer`) replies for a batch whose call
    in progress overran and ends the process. The normal path wakes no other thread.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (drain)
    _exit_with_parent()
    for spec in task_modules:
        load_task_module(spec)
    timer = _CallTimer()
    run: BatchRun | None = None

    def started(position: int, at: float) -> None:
        progress[1] = at  # the start first: a reader that sees the new index never sees an older start
        progress[0] = position
        assert run is not None
        timer.start(position, at + float(run.calls[position][2]))

    def overran(_signum: int, _frame: Any) -> None:
        if timer.fired() and run is not None and run.overrun(timer.position):
            conn.send_bytes(codec.pack([True, run.outcomes]))
            os._exit(0)

    signal.signal(signal.SIGALRM, overran)
    conn.send_bytes(READY)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        reply_bytes, value_bytes, skip, calls = codec.unpack(data)
        run = BatchRun(calls, Budget(reply_bytes, value_bytes), skip, started)
        run.run()
        timer.stop()
        conn.send_bytes(codec.pack([False, run.outcomes]))


class SlotProcess:
    """One slot's child process, its pipe, and the shared ``[index, start]`` of the call it runs."""

    def __init__(self, ctx: Any, task_modules: list[str]) -> None:
        self._ctx = ctx
        self._modules = task_modules
        self._start()

    def _start(self) -> None:
        self.progress = self._ctx.RawArray("d", [-1.0, 0.0])
        parent, child = self._ctx.Pipe()
        args = (child, self._modules, self.progress)
        self.proc = self._ctx.Process(target=_child_main, args=args, daemon=True)
        self.proc.start()
        child.close()
        self.conn: Connection = parent
        self._poller = select.poll()  # made once: Connection.poll builds a selector on every call
        self._poller.register(parent.fileno(), select.POLLIN)
        self._ready = False
        self._killed_for: int | None = None
        self._cancelled: set[int] = set()

    def _wait_ready(self) -> bool:
        if not self._ready:
            try:
                self._ready = self.conn.poll(STARTUP_TIMEOUT_S) and self.conn.recv_bytes() == READY
            except (EOFError, OSError):
                self._ready = False
        return self._ready

    def _replace(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()
        self._start()

    def cancel(self, positions: Iterable[int]) -> None:
        """Stop these calls of the running batch: kill the process if one is not finished yet."""
        positions = set(positions)
        self._cancelled |= positions
        if positions and max(positions) >= self.progress[0]:
            self._killed_for = CANCELLED
            self.proc.kill()

    def execute(self, calls: list[Call], budget: Budget, ticket: Ticket) -> list[Outcome]:
        """Run a batch here; outcomes in call order. Replaces the process when it died or was killed."""
        if not self._wait_ready():
            self.proc.join(timeout=1)
            message = f"the slot process did not start (exit code {self.proc.exitcode})"
            self._replace()
            return lost_outcomes(len(calls), 0, encoded_failure(CRASHED, "ProcessDied", message), set())
        self.progress[0] = -1.0
        self._killed_for = None
        self._cancelled = set()
        skip = ticket.attach(self)
        reply = None
        try:
            self.conn.send_bytes(codec.pack([*budget, sorted(skip), calls]))
            if self._wait_reply(calls, time.monotonic()):
                reply = codec.unpack(self.conn.recv_bytes())
            elif self._killed_for is None:
                self._killed_for = TIMEOUT
        except (EOFError, OSError):
            pass
        ticket.detach()
        if reply is not None and not reply[0] and self._killed_for is None:
            return list(reply[1])
        return self._after_end(len(calls), reply, skip | self._cancelled)

    def _wait_reply(self, calls: list[Call], sent_at: float) -> bool:
        """Wait for the reply (True) until the call in progress is past its timeout plus the grace.

        Without a message per call, the parent wakes at the earliest moment any call could be
        past its deadline (a later call cannot start before now), and reads the progress again.
        """
        later = [math.inf] * (len(calls) + 1)  # later[i]: the shortest timeout from call i on
        for i in range(len(calls) - 1, -1, -1):
            later[i] = min(later[i + 1], float(calls[i][2]))
        while True:
            position = int(self.progress[0])
            started = self.progress[1] if position >= 0 else sent_at
            now = time.monotonic()
            left = started + float(calls[max(position, 0)][2]) + FALLBACK_GRACE_S - now
            if left <= 0 and int(self.progress[0]) == position:
                return False
            wait_s = max(0.0, min(left, later[max(position, 0) + 1] + FALLBACK_GRACE_S))
            if self._poller.poll(None if math.isinf(wait_s) else math.ceil(wait_s * 1000)):
                return True

    def _after_end(self, n: int, reply: Any, cancelled_positions: set[int]) -> list[Outcome]:
        """Replace the process, and the outcomes of a batch it could not finish normally."""
        current, killed_for = int(self.progress[0]), self._killed_for
        self.proc.join(timeout=0 if killed_for else 1)
        code = self.proc.exitcode
        self._replace()
        if reply is not None:  # the timer's reply (an overrun), or a reply just before a kill
            return [
                cancelled() if o[0] == NOT_RUN and j in cancelled_positions else o
                for j, o in enumerate(reply[1])
            ]
        if killed_for == TIMEOUT:
            message = (
                "task did not finish within its timeout (it held the interpreter; its process was killed)"
            )
            outcome = encoded_failure(TIMEOUT, "TaskTimeout", message)
        elif killed_for == CANCELLED:
            outcome = not_run()  # killed for a later call of the batch
        else:
            outcome = encoded_failure(CRASHED, "ProcessDied", f"the task's process died (exit code {code})")
        return lost_outcomes(n, current, outcome, cancelled_positions)

    def close(self) -> None:
        """Stop the child process."""
        self.conn.close()
        self.proc.join(timeout=2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def slot_context() -> Any:
    """The multiprocessing context slot processes start from: forkserver where available."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


class ProcessSlots:
    """``n`` slot processes; a batch takes one for its whole run."""

    def __init__(self, n: int, task_modules: list[str]) -> None:
        self.total = n
        ctx = slot_context()
        self._idle = [SlotProcess(ctx, list(task_modules)) for _ in range(n)]
        self._lock = threading.Lock()

    def run(self, calls: list[Call], budget: Budget, ticket: Ticket) -> list[Outcome]:
        """Run a batch in a free slot process (the ticket holds a slot, so one is free)."""
        with self._lock:
            slot = self._idle.pop()
        try:
            return slot.execute(calls, budget, ticket)
        finally:
            with self._lock:
                self._idle.append(slot)
            ticket.release()

    def close(self) -> None:
        """Stop every slot process."""
        with self._lock:
            slots, self._idle = self._idle, []
        for slot in slots:
            slot.close()
