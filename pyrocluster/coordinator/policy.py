"""The failover table: what happened to a call -> what the dispatcher does (pure, no sockets).

"What happens when a worker dies" is the ``CLOSED``/``TIMED_OUT``/``PROBE_SILENT`` rows: the call
goes back to the front of its queue at once (costing an attempt) and the worker is set aside and
re-probed with backoff (``retry.Quarantine``). The dispatcher applies these rows; the links only
report what they saw.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from pyrocluster import protocol
from pyrocluster.coordinator.retry import attempts_left


class Happened(str, Enum):
    """What a link or a worker's reply reported about one call."""

    REFUSED = "refused"
    """The connection was refused: the batch never reached the worker."""
    DRAINING = "draining"
    """The worker answered that it is draining (leaving)."""
    BUSY = "busy"
    """The worker's admission queue was full (work of other coordinators)."""
    CLOSED = "closed"
    """The connection broke during the call."""
    TIMED_OUT = "timed out"
    """The worker did not answer the batch within its deadline."""
    PROBE_SILENT = "probe silent"
    """The worker stopped answering its liveness probe while holding the call."""
    TASK_RAISED = "task raised"
    """The task raised (or its result could not be sent): the task's own failure."""
    TASK_OVERRAN = "task overran"
    """The call overran its own timeout on the worker."""
    SLOT_CRASHED = "slot crashed"
    """The worker's slot process died during the call."""
    TRANSIENT = "transient"
    """A fetch that a later attempt may fix."""
    NOT_RUN = "not run"
    """The worker never started the call (a batch-mate overran or crashed first)."""
    NOT_RUNNABLE_HERE = "not runnable here"
    """The worker does not offer the task (its catalog was stale)."""
    DECODE_FAILED = "decode failed"
    """The coordinator could not decode the call's outcome."""
    TOO_LARGE = "too large"
    """The request was over the message cap: the batch is split."""
    TOO_LARGE_ALONE = "too large alone"
    """A call alone is over the message cap."""
    BAD_REPLY = "bad reply"
    """The worker's reply was malformed, or the worker raised while handling the batch."""
    CANCELLED = "cancelled"
    """The call was stopped by a cancel."""
    CREDENTIAL_LAPSED = "credential lapsed"
    """The worker refused our token as expired or revoked: every worker will, so nothing is retried."""


class WorkerAction(str, Enum):
    """What becomes of the worker the call was on."""

    KEEP = "keep"
    SET_ASIDE = "set aside"
    """No more work; re-probed with exponential backoff; used again once it answers."""
    DRAINING = "draining"
    """No more work; forgotten once it leaves the name server."""
    FULL = "full"
    """Counted full until it reports its load again (or a short backoff passes)."""


class EndsAs(str, Enum):
    """How a call ends when it is not (or no longer) re-queued."""

    UNAVAILABLE = "WorkerUnavailable"
    TIMEOUT = "TaskTimeout"
    FAILED = "TaskFailed"
    DECODE_ERROR = "DecodeError"
    TOO_LARGE = "ArgumentsTooLarge"
    BAD_REPLY = "InvalidReply"
    CANCELLED = "cancelled"
    CREDENTIAL = "AuthenticationError"


class Rule(NamedTuple):
    """One row of the table."""

    requeue: bool
    """Put the call back at the front of its queue (while attempts remain, if it costs one)."""
    costs_attempt: bool
    worker: WorkerAction
    ends_as: EndsAs
    """The error the call ends with when it is not re-queued."""


K, S, D, F = WorkerAction.KEEP, WorkerAction.SET_ASIDE, WorkerAction.DRAINING, WorkerAction.FULL

TABLE: dict[Happened, Rule] = {
    Happened.REFUSED: Rule(True, False, S, EndsAs.UNAVAILABLE),
    Happened.DRAINING: Rule(True, False, D, EndsAs.UNAVAILABLE),
    Happened.BUSY: Rule(True, False, F, EndsAs.UNAVAILABLE),
    Happened.CLOSED: Rule(True, True, S, EndsAs.UNAVAILABLE),
    Happened.TIMED_OUT: Rule(True, True, S, EndsAs.UNAVAILABLE),
    Happened.PROBE_SILENT: Rule(True, True, S, EndsAs.UNAVAILABLE),
    Happened.TASK_RAISED: Rule(False, True, K, EndsAs.FAILED),  # re-queued only with retry_on_error
    Happened.TASK_OVERRAN: Rule(False, True, K, EndsAs.TIMEOUT),  # the task's own failure, as a raise
    Happened.SLOT_CRASHED: Rule(True, True, K, EndsAs.UNAVAILABLE),
    Happened.TRANSIENT: Rule(True, True, K, EndsAs.UNAVAILABLE),
    Happened.NOT_RUN: Rule(True, False, K, EndsAs.UNAVAILABLE),
    Happened.NOT_RUNNABLE_HERE: Rule(True, False, K, EndsAs.UNAVAILABLE),  # task dropped from its catalog
    Happened.DECODE_FAILED: Rule(False, False, K, EndsAs.DECODE_ERROR),
    Happened.TOO_LARGE: Rule(True, False, K, EndsAs.TOO_LARGE),  # the dispatcher halves its batches
    Happened.TOO_LARGE_ALONE: Rule(False, False, K, EndsAs.TOO_LARGE),
    Happened.BAD_REPLY: Rule(False, False, K, EndsAs.BAD_REPLY),
    Happened.CANCELLED: Rule(False, False, K, EndsAs.CANCELLED),
    Happened.CREDENTIAL_LAPSED: Rule(False, False, K, EndsAs.CREDENTIAL),
}
"""The failover table, one row per :class:`Happened`."""


class Verdict(NamedTuple):
    """The table applied to one call: re-queue it (or end it as ``ends_as``), and its cost."""

    requeue: bool
    costs_attempt: bool
    ends_as: EndsAs


def decide(happened: Happened, attempts: int, retries: int, retry_on_error: bool = False) -> Verdict:
    """Apply the table to a call that has made ``attempts`` (this one included) of ``1 + retries``."""
    rule = TABLE[happened]
    requeue = rule.requeue or (retry_on_error and happened in (Happened.TASK_RAISED, Happened.TASK_OVERRAN))
    if requeue and rule.costs_attempt and not attempts_left(attempts, retries):
        requeue = False
    return Verdict(requeue, rule.costs_attempt, rule.ends_as)


def worker_action(happened: Happened) -> WorkerAction:
    """What becomes of the worker after ``happened``."""
    return TABLE[happened].worker


OUTCOME_HAPPENED: dict[int, Happened] = {
    protocol.ERROR: Happened.TASK_RAISED,
    protocol.TIMEOUT: Happened.TASK_OVERRAN,
    protocol.CRASHED: Happened.SLOT_CRASHED,
    protocol.TRANSIENT: Happened.TRANSIENT,
    protocol.NOT_RUN: Happened.NOT_RUN,
    protocol.UNKNOWN_TASK: Happened.NOT_RUNNABLE_HERE,
    protocol.CANCELLED: Happened.CANCELLED,
}
"""The reply's outcome kinds (docs/protocol.md) other than OK, as table rows."""
