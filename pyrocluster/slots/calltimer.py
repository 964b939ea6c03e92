"""A slot process's timer: one real-time timer (``setitimer``, SIGALRM) for the deadline of the
call in progress, armed again only when it would go off too late for a new call.

Calls of equal timeouts start later and later, so a batch of quick calls arms the timer about
once per timeout, not once per call: when it goes off early, :meth:`CallTimer.fired` arms it for
the deadline of the call then in progress.

A task may change the signal's handler or the timer (``signal.alarm(0)``, a handler of its own, a
``setitimer``). Both are checked before each batch (:meth:`CallTimer.check`: a lookup and a system
call, 0.3-5 us, too dear for every call of a batch of tiny ones) and what a task changed is put
back, so the next batch runs as in a fresh slot. A call later in the same batch as a task that
changed them is stopped by the worker's fallback kill instead (its finished batch-mates keep their
outcomes all the same). (Blocking SIGALRM in the main thread stops nothing: the kernel hands it
to another thread, and the handler still runs on the main thread.)
"""

from __future__ import annotations

import importlib
import math
import signal
import time
from typing import Any

TIMER_SLACK_S = 0.01
"""How far the real timer may be from the one the slot armed before it counts as changed by a task."""

_raw_signal: Any = importlib.import_module("_signal")
"""The C functions behind ``signal``: ``signal.getsignal`` takes ~8 us for a Python handler (it
tries to make an enum of it), ``_signal.getsignal`` ~0.1 us."""


class CallTimer:
    """The timer of the calls a slot process runs; ``handler`` is its SIGALRM handler."""

    def __init__(self, handler: Any) -> None:
        self._handler = handler
        self.fires_at = math.inf
        """When the armed timer goes off (monotonic); inf when none is armed. A call whose
        deadline is earlier arms it (:meth:`arm`)."""
        self.restore()

    def restore(self) -> None:
        """Our handler installed, and the timer to be armed afresh."""
        _raw_signal.signal(signal.SIGALRM, self._handler)
        self.fires_at = math.inf

    def check(self) -> None:
        """Before a batch: put back the handler and the timer if a task changed them."""
        if self._changed():
            self.restore()

    def _changed(self) -> bool:
        """A task replaced the handler, or moved, stopped or repeated the timer the slot armed."""
        if _raw_signal.getsignal(signal.SIGALRM) is not self._handler:
            return True
        now = time.monotonic()  # before reading the timer: a delay in between cannot look like a change
        remaining, interval = _raw_signal.getitimer(signal.ITIMER_REAL)
        if interval:
            return True
        if math.isinf(self.fires_at):
            return False  # nothing armed: the call's own deadline is armed next anyway
        expected = self.fires_at - now
        return remaining > expected + TIMER_SLACK_S or (remaining == 0 and expected > TIMER_SLACK_S)

    def fired(self, deadline: float) -> bool:
        """The timer went off while a call of this ``deadline`` is in progress (inf for none):
        True when the call is past it, else the timer is armed for it."""
        self.fires_at = math.inf
        if math.isinf(deadline):
            return False  # between calls: the next one arms the timer as it starts
        if time.monotonic() >= deadline:
            return True
        self.arm(deadline)
        return False

    def arm(self, at: float) -> None:
        """Go off at ``at`` (monotonic) instead of when armed before."""
        self.fires_at = at
        signal.setitimer(signal.ITIMER_REAL, max(at - time.monotonic(), 1e-6))
