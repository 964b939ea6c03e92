"""A lone call's reply awaited by polling its socket without sleeping for a moment first.

A thread that sleeps in ``poll()`` for a reply is woken by the kernel when it comes, and on a
virtual machine whose idle vCPUs halt (this project's bench hosts: no guest halt-polling) that
wake-up is an inter-processor interrupt and a vCPU brought back from halt: the reply's ``send``
in the slot pays for the interrupt, and the waiter for the return from halt. A bare request to a
slot on the same host and its reply took 94-105 us with the client asleep in ``poll()`` and
38-39 us with it polling, most of the difference spent in exactly that. So the thread waiting for
a lone call's reply first polls without a timeout for up to ``window`` seconds
(``DEFAULT_REPLY_SPIN_S``, ``PYROCLUSTER_REPLY_SPIN_US``; 0 turns it off), and only then sleeps.

It spins only where it pays: for a call that was the dispatcher's only call in flight when it
went out (one call at a time, the Pyro5 way: nothing else in the process waits on the
coordinator then), and not after a wait that outlasted the window. After such a miss the next
call sleeps at once, and each further miss in a row doubles the run of calls that sleep at once,
up to ``MAX_SKIP``; a reply caught while spinning ends the run. A task that takes longer than the
window therefore costs its callers one wasted window in ``MAX_SKIP`` calls.

The cost: the spinning thread holds the CPU it waits on (the window at most: a lone ``add`` on
this machine used about 22 us more CPU on the calling thread) and takes the interpreter lock
between polls, so other Python threads of the process run between its polls or after the window.

The figure it buys: a lone ``add`` on two local workers 146-160 -> 108-117 us (``python -m
bench.reply_spin``, nine alternating rounds; a raw Pyro5 call: 80-86 us in the full runs); a bare
request to a slot and its reply 94-105 -> 38-39 us (BENCHMARKS.md, the runs of 11:35-13:15 UTC,
"the lone call's reply awaited awake").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

MAX_SKIP = 64
"""The longest run of calls that sleep at once after misses in a row."""


class ReplySpin:
    """Whether the next lone call's waiting thread spins, and for how long: policy, no clock."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        """How long a wait polls without sleeping (0: never)."""
        self._misses = 0
        self._skip = 0
        self.caught_replies = 0
        """Replies that came while their thread spun."""
        self.missed_replies = 0
        """Spins that ended without the reply (their thread then slept)."""

    def window(self) -> float:
        """Seconds the wait starting now spins (0.0: it sleeps at once)."""
        if self._skip:
            self._skip -= 1
            return 0.0
        return self.window_s

    def caught(self, hit: bool) -> None:
        """The spin of the wait just over caught its reply (``hit``) or ran out."""
        if hit:
            self.caught_replies += 1
            self._misses = 0
            return
        self.missed_replies += 1
        self._misses += 1
        self._skip = min(2 ** (self._misses - 1), MAX_SKIP)


def spin(poll: Callable[[int], Any], window_s: float) -> bool:
    """Poll (``poll(0)``: ready file descriptors, none waited for) until something is ready or
    ``window_s`` is over; True when something is."""
    clock = time.perf_counter
    end = clock() + window_s
    while not poll(0):
        if clock() >= end:
            return False
    return True
