"""One batch's calls run one after another in one slot, each under its own timeout.

The steps of a call shared by both pools (decoding its arguments, running it, encoding its
outcome, the reply's budget) are here, and :class:`BatchRun`, a thread slot's batch: the slot
thread calls :meth:`BatchRun.run`; its watcher (the request thread) calls :meth:`BatchRun.watch`,
which returns when the batch ends or when the call in progress passes its own deadline. A slot
process runs its batch in one flat loop instead (``inline_batch.py``). Outcomes leave here
encoded, one value at a time (docs/protocol.md), so one result that cannot be sent or is too
large fails that call alone.
"""

from __future__ import annotations

import math
import operator
import threading
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from pyrocluster import bigbuffers, codec
from pyrocluster.protocol import CANCELLED, ERROR, NOT_RUN, TIMEOUT
from pyrocluster.tasks import failure, run_call

Call = list[Any]
"""``[name, payload, timeout_s]``: payload is ``codec.pack([args, kwargs])``."""
_PAYLOAD = operator.itemgetter(1)
Outcome = list[Any]
"""``[kind, value, elapsed_ms]`` with value ``codec.pack``-ed bytes, or None (NOT_RUN, CANCELLED)."""

MAX_CALLS = 100_000
"""Most calls in one batch."""
OUTCOME_OVERHEAD_BYTES = 64
"""What one outcome costs in a reply besides its value's bytes (kind, elapsed, framing)."""


class Budget(NamedTuple):
    """What one reply may hold: small values up to ``reply_bytes`` in all, plus one value bigger
    than that up to ``value_bytes`` (a reply never carries two big values)."""

    reply_bytes: int
    value_bytes: int


def not_run() -> Outcome:
    """The outcome of a call that never started."""
    return [NOT_RUN, None, 0.0]


def cancelled() -> Outcome:
    """The outcome of a call stopped by ``cancel``."""
    return [CANCELLED, None, 0.0]


def encoded_failure(kind: int, type_name: str, message: str, elapsed_ms: float = 0.0) -> Outcome:
    """An encoded failure outcome with no traceback."""
    outcome = failure(kind, type_name, message)
    return [kind, codec.pack(outcome[1]), elapsed_ms]


def timeout_outcome(timeout_s: float, how: str = "") -> Outcome:
    """TIMEOUT TaskTimeout for a call that overran ``timeout_s``; ELAPSED_MS is the timeout."""
    message = f"task did not finish within its timeout of {timeout_s:g} s{how}"
    return encoded_failure(TIMEOUT, "TaskTimeout", message, 1000 * timeout_s)


def encode(outcome: list[Any], place: bigbuffers.Place | None = None) -> Outcome:
    """Encode a ``[kind, plain value, ms]`` outcome (a big one where ``place`` offers, see
    ``codec.pack``); a value that cannot be sent becomes ERROR NotSendable."""
    kind, value, elapsed_ms = outcome
    try:
        return [kind, codec.pack(value, place), elapsed_ms]
    except codec.NotSendable as exc:
        return encoded_failure(ERROR, "NotSendable", f"result cannot be sent: {exc}", elapsed_ms)


def decode_arguments(payload: Any) -> tuple[list[Any], dict[str, Any]] | str:
    """``(args, kwargs)`` from a call's payload, or what is wrong with it."""
    try:
        decoded = codec.unpack(payload)
    except codec.DecodeError as exc:
        decoded = exc
    return arguments_of(decoded)


def arguments_of(decoded: Any) -> tuple[list[Any], dict[str, Any]] | str:
    """``(args, kwargs)`` from a decoded payload (or the DecodeError of one), or what is wrong."""
    if type(decoded) is not list or len(decoded) != 2:
        if isinstance(decoded, codec.DecodeError):
            return f"arguments: {decoded}"
        return "arguments must be encoded as [args, kwargs]"
    args, kwargs = decoded
    if type(args) is not list:
        return "args must be a list"
    if type(kwargs) is not dict or (kwargs and not all(type(k) is str for k in kwargs)):
        return "kwargs must be a dict with string keys"
    return args, kwargs


def run_decoded(
    name: str, arguments: tuple[list[Any], dict[str, Any]] | str, place: bigbuffers.Place | None = None
) -> Outcome:
    """Run one call on its decoded arguments (or fail it with what is wrong with them) and
    encode its outcome (a big value where ``place`` offers); never raises."""
    if isinstance(arguments, str):
        return encoded_failure(ERROR, "InvalidCall", arguments)
    return encode(run_call(name, *arguments), place)


BULK_DECODE_BYTES = 4096
"""A batch whose payloads are all at most this long has them decoded together before its first
call (``codec.unpack_each``: one C-level pass); a longer one is decoded as its call starts, so
a big argument is never held decoded before its turn, and its decoding counts in its call."""


def batch_arguments(calls: list[Call]) -> list[Any] | None:
    """Every call's ``(args, kwargs)`` or what is wrong with them, decoded together; None when
    the batch holds a payload too long for that (``BULK_DECODE_BYTES``) or one not bytes, and
    for a lone call, which its own decode serves for less (its set and zip passes cost a direct
    call 4-8 us)."""
    payloads = list(map(_PAYLOAD, calls))
    if len(payloads) < 2 or max(map(len, payloads)) > BULK_DECODE_BYTES:
        return None
    if set(map(type, payloads)) != {bytes}:
        return None
    decoded = codec.unpack_each(payloads)
    if set(map(type, decoded)) == {list} and set(map(len, decoded)) == {2}:
        args, kwargs = zip(*decoded, strict=True)
        if set(map(type, args)) == {list} and set(map(type, kwargs)) == {dict} and not any(kwargs):
            return decoded  # the common batch: positional arguments only, each [args, {}]
    return [arguments_of(value) for value in decoded]


def too_large(size: int, cap: int, elapsed_ms: float) -> Outcome:
    """ERROR ResultTooLarge for a result over the worker's ``max_value_bytes``."""
    message = f"result of {size} bytes is over max_value_bytes ({cap} bytes) of this worker"
    return encoded_failure(ERROR, "ResultTooLarge", message, elapsed_ms)


class BatchRun:
    """The calls of one batch, the outcomes so far, and the deadline of the call in progress."""

    def __init__(
        self,
        calls: list[Call],
        budget: Budget,
        skip: Iterable[int] = (),
    ) -> None:
        """The calls at the positions in ``skip`` are CANCELLED without running."""
        self.calls = calls
        self.outcomes: list[Outcome] = []
        self.stopped = False
        """True when a watcher ended the batch (overrun or cancel), not the slot."""
        self._budget = budget
        self._used = 0
        self._big_taken = False
        self._skip = set(skip)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._ended = False
        self._watching = False
        """A watcher waits on ``_cond`` (a thread slot's): only then is each call's start signalled."""
        self._current = -1
        self._started = 0.0
        self._deadline = math.inf

    def run(self) -> None:
        """Run the calls in order (in the slot); returns early once a watcher stopped the batch."""
        calls = self.calls
        budget, value_cap = self._budget
        decoded = batch_arguments(calls)
        with self._lock:
            i = self._next(0)
        while i < len(calls):
            call = calls[i]
            arguments = decode_arguments(call[1]) if decoded is None else decoded[i]
            outcome = run_decoded(call[0], arguments)
            if len(outcome[1]) > value_cap:
                outcome = too_large(len(outcome[1]), value_cap, outcome[2])
            size = len(outcome[1]) + OUTCOME_OVERHEAD_BYTES
            big = size > budget
            with self._lock:
                if self._ended:
                    return
                if self._big_taken if big else self._used + size > budget:
                    self._end_at(i, not_run(), stopped=False)  # the reply is full: the rest go back
                    return
                if big:
                    self._big_taken = True
                else:
                    self._used += size
                self.outcomes.append(outcome)
                i = self._next(i + 1)

    def _next(self, i: int) -> int:
        """Start call ``i`` or the next one not skipped; ``len(calls)`` when none is left (lock held)."""
        while i < len(self.calls) and i in self._skip:
            self.outcomes.append(cancelled())
            i += 1
        if i == len(self.calls):
            self._ended = True
            self._deadline = math.inf
            self._cond.notify_all()
            return i
        self._current = i
        self._started = time.monotonic()
        self._deadline = self._started + self.calls[i][2]
        if self._watching:  # a watcher asleep on the previous call's deadline takes this one
            self._cond.notify_all()
        return i

    def watch(self) -> bool:
        """Wait until the batch ends (True) or its call in progress overruns (False).

        After False the outcomes are final: the finished calls' own, TIMEOUT for the overrunning
        call, NOT_RUN (or CANCELLED) for the rest.
        """
        with self._cond:
            self._watching = True
            while not self._ended:
                left = self._deadline - time.monotonic()
                if left <= 0 and self.overrun(self._current):
                    return False
                self._cond.wait(None if math.isinf(left) else max(left, 0.001))
            return not self.stopped

    def in_progress(self, position: int) -> bool:
        """Call ``position`` has started and not finished (lock held)."""
        return not self._ended and position == self._current and len(self.outcomes) == position

    def overrun(self, position: int) -> bool:
        """End the batch at call ``position`` (TIMEOUT) if it is still in progress; True if it was
        (lock held)."""
        if not self.in_progress(position):
            return False
        self._end_at(position, timeout_outcome(float(self.calls[position][2])))
        return True

    def cancel(self, positions: Iterable[int]) -> None:
        """Stop these calls: skip them if not started, end the batch if one is in progress."""
        with self._cond:
            if self._ended:
                return
            self._skip.update(positions)
            if self._current in self._skip and len(self.outcomes) == self._current:
                self._end_at(self._current, cancelled())

    def _end_at(self, position: int, outcome: Outcome, stopped: bool = True) -> None:
        """Final outcomes: those before ``position``, ``outcome``, then NOT_RUN/CANCELLED (lock held)."""
        rest = [cancelled() if j in self._skip else not_run() for j in range(position + 1, len(self.calls))]
        self.outcomes[position:] = [outcome, *rest]
        self._ended = True
        self.stopped = stopped
        self._cond.notify_all()


def ended_outcomes(
    finished: list[Outcome],
    n: int,
    cancelled_positions: set[int],
    current: int = -1,
    current_outcome: Outcome | None = None,
) -> list[Outcome]:
    """Outcomes of a batch of ``n`` calls in a slot process, from those it logged (``finished``).

    The call in progress when the process ended (``current``, -1 for none) gets ``current_outcome``;
    the others not finished never started: NOT_RUN (sent again at no cost), or CANCELLED.
    """
    if len(finished) == n:
        return finished
    blame = current_outcome or not_run()
    return finished + [
        cancelled() if j in cancelled_positions else blame if j == current else not_run()
        for j in range(len(finished), n)
    ]
