"""The worker protocol's vocabulary, imported by both sides: outcome kinds (docs/protocol.md)."""

from __future__ import annotations

OK, ERROR, TIMEOUT, CRASHED, TRANSIENT, NOT_RUN, UNKNOWN_TASK, CANCELLED = 0, 1, 2, 3, 4, 5, 6, 7
"""Outcome kinds a worker reports per call: ``[kind, value, elapsed_ms]`` (docs/protocol.md).

ERROR is the task's own failure (or a result that could not be sent); TIMEOUT, CRASHED and
TRANSIENT (a fetch that a later attempt may fix) are retried while attempts remain; NOT_RUN (never
started), UNKNOWN_TASK (a stale catalog) and CANCELLED say nothing about the task itself."""

HELD_PER_SLOT = 2
"""Batches one coordinator may hold at a worker (running or waiting) per compute slot: enough to
keep one of its batches waiting there while another runs, so the worker's fair order always has
it to choose. Past that the worker answers ``busy``; a coordinator never sends more."""
