"""Where and when a slot process serves direct calls, in a module of its own.

A slot process gets its :class:`DirectSpec` as an argument of its start, so it imports this module
before it says it is ready. Defined in ``direct.py``, that import loaded Pyro5 and the endpoint's
code in every slot process first (about 30 ms of CPU each, four at once in a ``submit --local 2``,
on the way to the workers' registration); the slot loads them when it opens its endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyrocluster.config import Settings

FIRST_BATCH_WAIT_S = 0.3
"""Seconds a new slot process waits for its first batch before it opens its endpoint (80-170 ms of
CPU). Opened at once, the four slot processes of a ``submit --local 2`` used about 0.4 s of CPU on
the two cores (0.09 s now) while the workers registered, and the job's first batch waited for its
slot's endpoint; a slot now opens it after its first batch, or once this long without one. In
that run the first batch comes about 0.1 s after the slots are ready, and the first task has run
before the others open theirs. Kept short: a job sent to a worker that has just started (its
first batch within this bound) finds its slots building their endpoints after that batch, as a
replaced slot's next batch does. Until then its worker runs lone calls by ``run_batch``."""


@dataclass(frozen=True)
class DirectSpec:
    """Where and how a slot process serves direct calls (handed to it at its start)."""

    settings: Settings
    host: str
    advertise: str | None
    object_id: str
    first_batch_wait_s: float = FIRST_BATCH_WAIT_S
    """How long the new slot waits for a first batch before it opens its endpoint."""
