"""Process slots: one child process per slot, reached on its own persistent pipe.

Children come from a ``forkserver`` (``spawn`` where there is none): a clean, single-threaded
server that has imported this module forks each one, so a slot killed for an overrun or a
cancel is replaced in tens of milliseconds, not the second a fresh interpreter takes.

One message goes each way per batch (a big payload is handed over beside the batch's message as
shared memory the slot maps, ``handoff.py``); everything else goes through a :class:`SlotShare`: the
child logs each outcome there as its call ends (a big result is packed straight into it), and reads
there whether a call was cancelled before starting it. Inside the child, the main thread runs the
calls one after another, each under a one-shot timer set to its own timeout: when one fires, its
handler marks the overrun and ends the process, which the parent replaces. The parent keeps a
fallback deadline (the call's own timeout plus a grace) for a task that holds the interpreter lock
in C code, where no handler can run. However the process ends (the timer, a fallback kill, a cancel
of the running call, a crash), the calls that had finished keep their outcomes from the log, the one
in progress gets the outcome of the end, and the rest never started.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import operator
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from pyrocluster import attachments, codec, logs
from pyrocluster.errors import ConfigError
from pyrocluster.gc_thresholds import fewer_collections
from pyrocluster.protocol import CANCELLED, CRASHED, TIMEOUT
from pyrocluster.slots import handoff, limits
from pyrocluster.slots.batch import (
    MAX_CALLS,
    Budget,
    Call,
    Outcome,
    cancelled,
    encoded_failure,
    ended_outcomes,
    timeout_outcome,
)
from pyrocluster.slots.calltimer import CallTimer
from pyrocluster.slots.forkserver import slot_context
from pyrocluster.slots.inline_batch import run_logged, run_lone
from pyrocluster.slots.share import SlotShare
from pyrocluster.tasks import load_task_module

if TYPE_CHECKING:  # the gate and the lender are the worker's: slot processes never load them
    from pyrocluster.slots.direct_spec import DirectSpec
    from pyrocluster.slots.gate import Ticket
    from pyrocluster.slots.lending import Lender

_PAYLOAD = operator.itemgetter(1)
_TIMEOUT = operator.itemgetter(2)
READY = b"ready"
"""The first message of a slot process: its task modules are loaded."""
DONE = b"done"
"""A slot process's reply to a batch: every outcome is in the log."""
STARTUP_TIMEOUT_S = 60.0
"""Seconds a new slot process may take to load its task modules."""
FALLBACK_GRACE_S = 0.5
"""Seconds past a call's own timeout before the parent kills a slot whose timer could not act."""
START_RETRIES_S = (0.05, 0.1, 0.2, 0.4, 0.8)
"""Pauses between tries to start a slot process. A fork server that a signal to the worker's whole
process group is ending refuses the connection while it still looks alive; once it is reaped,
``multiprocessing`` starts a new one."""


def _exit_with_parent(interval_s: float = 1.0) -> None:
    """End this slot process soon after its worker is gone (SIGKILLed), even mid-task."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def end_group(pid: int) -> None:
    """SIGKILL slot process ``pid`` with what its tasks started that is still in its group (a
    task's child would otherwise outlive a timeout, a cancel or its worker)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # not its group's leader yet, or gone
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _send(conn: Connection, message: bytes) -> bool:
    """Send to the worker; False when it closed the pipe (it stops this process: nothing to say)."""
    try:
        conn.send_bytes(message)
    except OSError:
        return False
    return True


def _child_main(
    conn: Connection,
    task_modules: list[str],
    share: SlotShare,
    direct: DirectSpec | None = None,
    log_setup: Any = None,
) -> None:
    """Body of a slot process: load the user's tasks, then run batches until the pipe closes
    (and, with ``direct``, serve direct calls between them: ``direct.py``).

    The main thread's SIGALRM handler (see :mod:`~pyrocluster.slots.calltimer`) marks an overrun of
    the call in progress and ends the process. The normal path wakes no other thread.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (drain)
    os.setpgrp()  # a group of its own: ending it (``end_group``) ends the processes its tasks started
    logs.adopt(log_setup)  # the tasks' log records in the worker's format (one JSON object a line)
    _exit_with_parent()
    for spec in task_modules:
        try:
            load_task_module(spec)
        except ConfigError:  # the worker loads the same modules and says why, once: no traceback here
            raise SystemExit(2) from None
    running: list[Call] = []  # the calls of the batch in progress

    def overran(_signum: int, _frame: Any) -> None:
        position = share.running()
        deadline = share.started_at() + running[position][2] if 0 <= position < len(running) else math.inf
        if timer.fired(deadline):
            share.timed_out()
            end_group(os.getpid())

    timer = CallTimer(overran)

    def run_direct(call: Call, value_cap: int, at: float) -> Outcome:
        """A direct call (``direct.py``), claimed at ``at``, logged in the share as a batch of
        one; its outcome."""
        nonlocal running
        timer.check()
        running = [call]
        outcome = run_lone(call, value_cap, share, timer, at)
        running = []
        return outcome

    def run_direct_batch(calls: list[Call], budget: Budget) -> list[Outcome]:
        """A direct batch (``direct.py``), claimed: run as a batch from the pipe is, each call
        logged in the share as it ends; its outcomes (those the reply had no room for, NOT_RUN)."""
        nonlocal running
        timer.check()
        running = calls
        run_logged(calls, budget, share, timer, {})
        running = []
        return ended_outcomes(share.finished(), len(calls), set())

    if not _send(conn, READY):
        return
    server: Any = None
    idle_s = direct.first_batch_wait_s if direct is not None else 0.0  # none after a first batch
    raw = socket.socket(fileno=os.dup(conn.fileno()))  # the same pipe, for handed-off payloads
    with fewer_collections():  # a few acyclic containers per call: see gc_thresholds
        while True:
            if server is None and direct is not None and not conn.poll(idle_s):
                server = _direct_server(direct, share, conn, run_direct, run_direct_batch)
            if server is not None:
                server.serve()  # direct calls, until the pipe has a batch (or is closed)
            try:
                data = conn.recv_bytes()
                reply_bytes, value_bytes, calls, held, big = codec.unpack(data)
                for place in big:
                    calls[place][1] = handoff.receive(raw)
            except (EOFError, OSError):
                return
            timer.check()
            share.restart()
            restore = limits.apply(held)  # the batch's memory limit and CUDA_VISIBLE_DEVICES
            running = calls
            run_logged(calls, Budget(reply_bytes, value_bytes), share, timer, held)
            running = []
            for place in big:
                calls[place][1] = None  # unmapped once the task holds no view of it
            restore()
            idle_s = 0.0
            if not _send(conn, DONE):
                return


def _direct_server(
    direct: DirectSpec, share: SlotShare, conn: Connection, run_direct: Any, run_batch: Any
) -> Any:
    """The slot's endpoint for direct calls, made once the slot is idle after its first batch (or
    after ``first_batch_wait_s`` without one: ``direct_spec.py``). It loads Pyro5 and the worker's
    checks (80-170 ms), which neither the fork server nor a new slot's first batch should wait for.
    The worker lends the slot once its port is in the share."""
    from pyrocluster.slots.direct import DirectServer

    return DirectServer(direct, share, conn, run_direct, run_batch)


class SlotProcess:
    """One slot's child process, its pipe, and the :class:`SlotShare` of the batch it runs."""

    def __init__(
        self, ctx: Any, task_modules: list[str], log_bytes: int, direct: DirectSpec | None = None
    ) -> None:
        self._ctx = ctx
        self._modules = task_modules
        self._log_bytes = log_bytes
        self._direct = direct
        self.pipe_lock = threading.Lock()
        """Held by whoever talks with the process: a batch, or the worker's direct-call supervisor."""
        self.revocations: tuple[bytes, float] | None = None
        """The revocations each new process of this slot starts with (direct calls check them)."""
        self._closed = False
        """Set by :meth:`close`: a process that ends is not replaced any more."""
        self._start()

    def _start(self) -> None:
        self.share = SlotShare(self._ctx, MAX_CALLS, self._log_bytes)
        if self.revocations is not None:
            self.share.write_revocations(*self.revocations)
        self.told_seen = 0
        """Messages of the process between batches that the worker has read (``lending.py``)."""
        for pause in (*START_RETRIES_S, None):
            parent, child = self._ctx.Pipe()  # a new pipe each try: a failed one may have reached a child
            args = (child, self._modules, self.share, self._direct, logs.inherited())
            self.proc = self._ctx.Process(target=_child_main, args=args, daemon=True)
            try:
                self.proc.start()
                break
            except (OSError, EOFError):
                parent.close()
                child.close()
                if pause is None:
                    raise
                time.sleep(pause)
        child.close()
        self.conn: Connection = parent
        self._raw = socket.socket(fileno=os.dup(parent.fileno()))
        """The pipe as a socket, for the payloads handed over beside a batch's message."""
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

    def _stop(self) -> None:
        """End the process (killed if still alive) and forget it."""
        if self.proc.is_alive() and self.proc.pid is not None:
            end_group(self.proc.pid)
        if self.proc.pid is not None:  # one that never started has nothing to wait for
            self.proc.join()
        self.conn.close()
        self._raw.close()

    def _kill(self, reason: int) -> None:
        """Kill the process for ``reason`` (TIMEOUT or CANCELLED), once (the share's lock is held)."""
        if self._killed_for is None:
            self._killed_for = reason
            if self.proc.pid is not None:
                end_group(self.proc.pid)

    def cancel(self, positions: Iterable[int]) -> None:
        """Stop these calls of the running batch: those not started are skipped by the process; if
        one is in progress, the process is killed (the finished ones keep their outcomes)."""
        positions = set(positions)
        self._cancelled |= positions
        if self._killed_for is None:
            self.share.cancel(positions, lambda: self._kill(CANCELLED))

    def execute(self, calls: list[Call], budget: Budget, ticket: Ticket) -> list[Outcome]:
        """Run a batch here; outcomes in call order. Replaces the process when it died or was killed."""
        if not self._wait_ready():
            self.proc.join(timeout=1)
            message = f"the slot process did not start (exit code {self.proc.exitcode})"
            self._stop()
            self.share.close()
            self._start()
            crashed = encoded_failure(CRASHED, "ProcessDied", message)
            return ended_outcomes([], len(calls), set(), 0, crashed)
        share = self.share
        share.reset()
        self._killed_for = None
        self._cancelled = set()
        skip = ticket.attach(self)
        self._cancelled |= skip
        done = False
        try:
            share.flag(skip)
            big = _big_places(calls)
            sent = [[call[0], None, *call[2:]] if _big(call[1]) else call for call in calls] if big else calls
            self.conn.send_bytes(codec.pack([*budget, sent, ticket.limits(), big]))
            for place in big:
                handoff.send(self._raw, calls[place][1])
            done = self._wait_reply(calls) and self.conn.recv_bytes() == DONE
        except (EOFError, OSError):
            pass
        ticket.detach()
        if done and self._killed_for is None:
            finished = share.finished()
            share.recycle(self._cancelled)
            return ended_outcomes(finished, len(calls), self._cancelled)
        return self._after_end(calls)

    def _wait_reply(self, calls: list[Call]) -> bool:
        """Wait for the reply (True) until the call in progress is past its timeout plus the grace
        (False: the process is killed).

        Without a message per call, the parent wakes at the earliest moment any call could be
        past its deadline (a later call cannot start before now), and reads the progress again.
        """
        later = _shortest_from(list(map(float, map(_TIMEOUT, calls))))
        share = self.share
        while True:
            position = share.running()
            if position >= 0:
                left = share.started_at() + float(calls[position][2]) + FALLBACK_GRACE_S - time.monotonic()
                if left <= 0:
                    if share.kill_if_running(position, lambda: self._kill(TIMEOUT)):
                        return False
                    continue
                wait_s = min(left, later[position + 1] + FALLBACK_GRACE_S)
            else:  # between calls: the next one cannot start before now
                wait_s = later[share.logged_count()] + FALLBACK_GRACE_S
            if self._poller.poll(None if math.isinf(wait_s) else math.ceil(wait_s * 1000)):
                return True

    def _after_end(self, calls: list[Call]) -> list[Outcome]:
        """Replace the process, and the outcomes of a batch it could not finish normally."""
        share, killed_for = self.share, self._killed_for
        self.proc.join(timeout=0 if killed_for else 1)  # a crashed process is exiting: its exit code
        code = self.proc.exitcode
        self._stop()  # dead now: the share holds everything it logged
        current, finished, timed_out = share.running(), share.finished(), share.was_timed_out()
        share.close()
        if not self._closed:
            self._start()
        timeout_s = float(calls[current][2]) if current >= 0 else 0.0
        outcome = end_outcome(timed_out, killed_for, code, timeout_s)
        return ended_outcomes(finished, len(calls), self._cancelled, current, outcome)

    def replace_after_direct(self, calls: int) -> list[Outcome]:
        """Replace a process that ended while it ran ``calls`` direct calls; their outcomes, as
        :meth:`_after_end` gives a batch's: their own when logged, that of the end for the call
        in progress, CANCELLED for those flagged, NOT_RUN for the rest."""
        killed_for = self._killed_for
        self.proc.join(timeout=0 if killed_for else 1)
        code = self.proc.exitcode
        self._stop()
        share = self.share
        current, finished, timed_out = share.running(), share.finished(), share.was_timed_out()
        flagged, timeout_s = share.flagged(calls), round(share.timeout_s(), 3)
        share.close()
        if not self._closed:
            self._start()
        outcome = end_outcome(timed_out, killed_for, code, timeout_s)
        return ended_outcomes(finished, calls, flagged, current, outcome)

    def replace(self) -> None:
        """Replace a process that ended while idle."""
        self._stop()
        self.share.close()
        self._start()

    def close(self) -> None:
        """Stop the child process (one still loading its tasks ends without a word).

        An idle one ends on its own once its pipe closes. One running a task is ended at once:
        with its pipe closed nobody can read what the task returns, and waiting for it held a
        stopping worker 2 s (its batch's thread then cleans up, and starts no new process).
        """
        self._closed = True
        try:
            running = self.share.running() >= 0
        except ValueError:  # its share is closed: a batch's end is replacing the process
            running = False
        self.conn.close()
        self._raw.close()
        if running and self.proc.pid is not None:
            end_group(self.proc.pid)
            return
        if self.proc.pid is not None:
            self.proc.join(timeout=2)
        if self.proc.is_alive() and self.proc.pid is not None:
            end_group(self.proc.pid)
            self.proc.join()
        self.share.close()


def end_outcome(timed_out: bool, killed_for: int | None, code: int | None, timeout_s: float) -> Outcome:
    """The outcome of the call in progress when a slot process ended: overrun (its timer, or the
    worker's fallback kill), cancelled, or died."""
    if timed_out:
        return timeout_outcome(timeout_s)
    if killed_for == TIMEOUT:
        return timeout_outcome(timeout_s, " (the slot's timer could not stop it; its process was killed)")
    if killed_for == CANCELLED:
        return cancelled()
    return encoded_failure(CRASHED, "ProcessDied", f"the task's process died (exit code {code})")


def _big(payload: Any) -> bool:
    """A payload handed over beside the batch's message rather than inside it."""
    return isinstance(payload, (bytes, bytearray)) and len(payload) >= attachments.ATTACH_BYTES


def _big_places(calls: list[Call]) -> list[int]:
    """The places of the calls whose payload is handed over beside the batch's message (looked
    for call by call only when one payload is that long: one C-level pass for the common batch)."""
    if not calls or max(map(len, map(_PAYLOAD, calls))) < attachments.ATTACH_BYTES:
        return []
    return [i for i, call in enumerate(calls) if _big(call[1])]


def _shortest_from(timeouts: list[float]) -> list[float]:
    """``later[i]``: the shortest of ``timeouts[i:]`` (inf past the end), a running minimum from
    the end; two C-level passes when every call has the same timeout (the common batch)."""
    if timeouts and min(timeouts) == max(timeouts):
        return [timeouts[0]] * len(timeouts) + [math.inf]
    return [*itertools.accumulate(reversed(timeouts), min)][::-1] + [math.inf]


class ProcessSlots:
    """``n`` slot processes; a batch takes one for its whole run, with replies of up to
    ``log_bytes`` of outcomes."""

    def __init__(
        self, n: int, task_modules: list[str], log_bytes: int, direct: DirectSpec | None = None
    ) -> None:
        self.total = n
        ctx = slot_context()
        self._idle = [SlotProcess(ctx, list(task_modules), log_bytes, direct) for _ in range(n)]
        self._lock = threading.Lock()
        self.lender: Lender | None = None
        """Lends idle slots to direct calls and supervises those (None: no direct path)."""
        if direct is not None:
            from pyrocluster.slots.lending import Lender  # it builds on this module

            self.lender = Lender(list(self._idle))

    def run(self, calls: list[Call], budget: Budget, ticket: Ticket) -> list[Outcome]:
        """Run a batch in a free slot process (the ticket holds a slot, so one is free, or one
        a direct call holds is given back when that call ends)."""
        if self.lender is not None:
            return self.lender.run(calls, budget, ticket)
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
        if self.lender is not None:
            self.lender.close()
            return
        with self._lock:
            slots, self._idle = self._idle, []
        for slot in slots:
            slot.close()
