"""A worker's ``run_batch`` reply decoded, each call's outcome on its own (pure; docs/protocol.md).

Whatever the bytes a worker (or anything between it and us) sends, decoding ends in an outcome:
a call whose outcome cannot be decoded gets ``DECODE_FAILED`` (it ends as ``DecodeError``), no
exception leaves this module, and the text kept about bad input is bounded in size and depth.
"""

from __future__ import annotations

import itertools
import math
import reprlib
from typing import Any

from pyrocluster import codec
from pyrocluster.coordinator.policy import OUTCOME_HAPPENED, Happened
from pyrocluster.protocol import OK

Outcome = tuple["Happened | None", Any, float]
"""One call's outcome as decoded: None for OK (then the value), else the table row and its value."""

MAX_ELAPSED_MS = 1e12
"""Largest ELAPSED_MS taken as a time (about 30 years): beyond it the outcome is malformed."""

_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 4, 60, 60, 40


def shown(value: Any) -> str:
    """A short, bounded description of a received value (any depth, any size, never raises)."""
    try:
        return _SHOWN.repr(value)[:200]
    except Exception:  # a value whose repr fails: its type is all we say
        return f"<{type(value).__name__}>"


def decode_reply(reply: Any, n_calls: int) -> Happened | list[Outcome]:
    """A ``run_batch`` reply as one row for the whole batch, or one decoded outcome per call."""
    if not isinstance(reply, dict):
        return Happened.BAD_REPLY
    if "refused" in reply:
        return Happened.DRAINING
    if reply.get("busy") is True:
        return Happened.BUSY
    outcomes = reply.get("outcomes") if "kinds" not in reply else _rows(reply, n_calls)
    if not isinstance(outcomes, list) or len(outcomes) != n_calls:
        return Happened.BAD_REPLY
    if n_calls == 1:  # a lone call: its outcome on its own costs less than the column passes
        return [decode_outcome(outcomes[0])]
    return _all_ok(outcomes) or [decode_outcome(o) for o in outcomes]


def _rows(reply: dict[str, Any], n_calls: int) -> list[list[Any]] | None:
    """A reply in columns as one ``[KIND, VALUE, ELAPSED_MS]`` per call; None when its columns
    are not ``n_calls`` long (:func:`_columns`)."""
    columns = _columns(reply, n_calls)
    return None if columns is None else list(map(list, zip(*columns, strict=True)))


def _columns(reply: dict[str, Any], n_calls: int) -> tuple[bytes, list[Any], list[Any]] | None:
    """The kinds (as bytes), values and times of a reply in columns (the answer to a request in
    columns, docs/protocol.md); None unless they are ``n_calls`` long each."""
    values, elapsed = reply.get("values"), reply.get("elapsed")
    try:
        kinds = codec.as_bytes(reply.get("kinds"))
    except codec.DecodeError:
        return None
    if type(values) is not list or type(elapsed) is not list:
        return None
    return (kinds, values, elapsed) if len(kinds) == len(values) == len(elapsed) == n_calls else None


def ok_columns(reply: Any, n_calls: int) -> tuple[list[Any], list[float]] | None:
    """The values and run times of a reply of several calls whose every call is ``[OK, bytes,
    ms]`` with a value that decodes (the common reply), as two columns; None for any other reply,
    which :func:`decode_reply` takes outcome by outcome."""
    if n_calls < 2 or type(reply) is not dict or "refused" in reply or reply.get("busy") is True:
        return None
    if "kinds" in reply:  # a reply in columns: read as such, no row to take apart
        columns = _columns(reply, n_calls)
        if columns is None or columns[0].count(OK) != n_calls:
            return None
        return _ok_values(columns[1], columns[2])
    outcomes = reply.get("outcomes")
    if type(outcomes) is not list or len(outcomes) != n_calls:
        return None
    return _ok_columns(outcomes)


def _all_ok(outcomes: list[Any]) -> list[Outcome] | None:
    """:func:`_ok_columns` as one decoded outcome per call."""
    columns = _ok_columns(outcomes)
    if columns is None:
        return None
    return list(zip(itertools.repeat(None), *columns))


def _ok_columns(outcomes: list[Any]) -> tuple[list[Any], list[float]] | None:
    """The values and times of outcomes that are all ``[OK, bytes, ms]`` with a value that
    decodes, checked and decoded a field at a time in C-level passes; None for any other, which
    :func:`decode_outcome` takes outcome by outcome, so one bad outcome fails its call alone."""
    if not outcomes or set(map(type, outcomes)) != {list} or set(map(len, outcomes)) != {3}:
        return None
    kinds, raws, elapsed = zip(*outcomes, strict=True)
    if set(map(type, kinds)) != {int} or kinds.count(OK) != len(kinds):
        return None
    return _ok_values(raws, elapsed)


def _ok_values(raws: Any, elapsed: Any) -> tuple[list[Any], list[float]] | None:
    """The decoded values and the times of calls that all succeeded: None unless every value is
    bytes that decode and every time a number of milliseconds from 0 to ``MAX_ELAPSED_MS``."""
    try:
        if (
            set(map(type, raws)) != {bytes}
            or not set(map(type, elapsed)) <= {int, float}
            or math.isnan(sum(elapsed))  # first: min and max are not reliable past a NaN
            or min(elapsed) < 0
            or max(elapsed) > MAX_ELAPSED_MS
        ):
            return None
    except OverflowError:  # an int too big for a float among the times
        return None
    values = codec.unpack_each(list(raws))
    if codec.DecodeError in set(map(type, values)):
        return None
    return values, list(map(float, elapsed))


def _undecodable(why: str, elapsed_ms: float = 0.0) -> Outcome:
    return Happened.DECODE_FAILED, f"the coordinator cannot decode the outcome: {why}", elapsed_ms


def decode_outcome(outcome: Any) -> Outcome:
    """``[KIND, VALUE, ELAPSED_MS]`` decoded on its own: an undecodable one fails its call alone.

    KIND must be a known int, ELAPSED_MS a number from 0 to ``MAX_ELAPSED_MS``, VALUE None or
    encoded bytes; anything else is ``DECODE_FAILED`` (the call ends as ``DecodeError``). Never
    raises.
    """
    if not isinstance(outcome, (list, tuple)) or len(outcome) != 3:
        return _undecodable(f"a malformed outcome: {shown(outcome)}")
    kind, raw, elapsed_ms = outcome
    if type(elapsed_ms) not in (int, float) or not 0 <= elapsed_ms <= MAX_ELAPSED_MS:
        return _undecodable(f"elapsed time {shown(elapsed_ms)} is not a number of milliseconds")
    elapsed = float(elapsed_ms)  # cannot overflow: the comparison bounded it
    if type(kind) is not int:
        return _undecodable(f"outcome kind {shown(kind)} is not an int", elapsed)
    if kind == OK:
        happened = None
    elif kind in OUTCOME_HAPPENED:
        happened = OUTCOME_HAPPENED[kind]
    else:
        return _undecodable(f"unknown outcome kind {shown(kind)}", elapsed)
    if raw is None:
        return happened, None, elapsed
    try:
        value = codec.unpack(codec.as_buffer(raw))
    except Exception as exc:  # DecodeError, or anything the decoder let through: this call fails
        return _undecodable(f"{type(exc).__name__}: {shown(str(exc))}", elapsed)
    return happened, value, elapsed


def text(value: Any) -> str:
    """A received field as text: a string as it is, anything else :func:`shown`."""
    return value if isinstance(value, str) else shown(value)


def failure_text(worker: str, happened: Happened, value: Any) -> str:
    """The reason kept with a call for its failed attempt (whatever the worker's error dict holds)."""
    if isinstance(value, dict):
        return f"on worker {worker}: {text(value.get('type'))}: {text(value.get('message'))}"
    return f"on worker {worker}: {value if isinstance(value, str) else happened.value}"
