"""A worker's ``run_batch`` reply decoded, each call's outcome on its own (pure; docs/protocol.md)."""

from __future__ import annotations

from typing import Any

from pyrocluster import codec
from pyrocluster.coordinator.policy import OUTCOME_HAPPENED, Happened
from pyrocluster.protocol import OK

Outcome = tuple["Happened | None", Any, float]
"""One call's outcome as decoded: None for OK (then the value), else the table row and its value."""


def decode_reply(reply: Any, n_calls: int) -> Happened | list[Outcome]:
    """A ``run_batch`` reply as one row for the whole batch, or one decoded outcome per call."""
    if not isinstance(reply, dict):
        return Happened.BAD_REPLY
    if "refused" in reply:
        return Happened.DRAINING
    if reply.get("busy"):
        return Happened.BUSY
    outcomes = reply.get("outcomes")
    if not isinstance(outcomes, list) or len(outcomes) != n_calls:
        return Happened.BAD_REPLY
    return [decode_outcome(o) for o in outcomes]


def decode_outcome(outcome: Any) -> Outcome:
    """``[KIND, VALUE, ELAPSED_MS]`` decoded on its own: an undecodable value fails its call alone."""
    try:
        kind, raw, elapsed_ms = outcome
        elapsed = float(elapsed_ms)
    except (TypeError, ValueError):
        return Happened.BAD_REPLY, f"a malformed outcome: {str(outcome)[:200]}", 0.0
    happened = None if kind == OK else OUTCOME_HAPPENED.get(kind, Happened.BAD_REPLY)
    if raw is None:
        return happened, None, elapsed
    try:
        value = codec.unpack(codec.as_bytes(raw))
    except codec.DecodeError as exc:
        return Happened.DECODE_FAILED, f"the coordinator cannot decode the outcome: {exc}", elapsed
    return happened, value, elapsed


def failure_text(worker: str, happened: Happened, value: Any) -> str:
    """The reason kept with a call for its failed attempt."""
    if isinstance(value, dict):
        return f"on worker {worker}: {value.get('type')}: {value.get('message')}"
    return f"on worker {worker}: {value if isinstance(value, str) else happened.value}"
