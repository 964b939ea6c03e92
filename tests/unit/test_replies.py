"""Decoding a worker's reply: whatever structure arrives, every call gets an outcome (no socket).

A property test feeds generated structures (and real encoded values, and garbage bytes) to
``replies.decode_outcome`` and ``decode_reply``: nothing but an outcome comes back, and the cases
found by fuzzing are pinned as examples.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pyrocluster import codec, protocol
from pyrocluster.codec import DecodeError
from pyrocluster.coordinator.policy import Happened
from pyrocluster.coordinator.replies import decode_outcome, decode_reply, failure_text, ok_columns, shown


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**400, -(10**400), 2**64, 2**63 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=40),
)
structures = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), inner, max_size=4),
    ),
    max_leaves=20,
)
values = st.one_of(
    st.none(),
    structures.map(lambda v: codec.pack(v) if not isinstance(v, float) or math.isfinite(v) else b""),
    st.binary(max_size=40),
    st.builds(lambda d: {"data": d, "encoding": "base64"}, st.text(max_size=20)),
    structures,
)
kinds = st.one_of(st.integers(min_value=-2, max_value=9), structures)
elapsed = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), structures)
outcomes = st.one_of(st.tuples(kinds, values, elapsed).map(list), structures)


def settled_alone(outcome: Any) -> None:
    """``decode_outcome`` returns a well-formed outcome (or raises only DecodeError)."""
    try:
        happened, _value, ms = decode_outcome(outcome)
    except DecodeError:
        return
    assert happened is None or isinstance(happened, Happened)
    assert isinstance(ms, float) and math.isfinite(ms) and ms >= 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(outcomes)
@example([[0], None, 1.0])  # an unhashable kind
@example([0, None, 10**400])  # an elapsed time no float holds
@example([protocol.OK, b"\xc1", 1.0])
def test_any_outcome_structure_decodes_to_an_outcome(outcome: Any) -> None:
    settled_alone(outcome)


@settings(max_examples=100, deadline=None)
@given(st.one_of(structures, st.dictionaries(st.sampled_from(["outcomes", "load", "busy"]), structures)))
def test_any_reply_structure_decodes_to_a_row_or_one_outcome_per_call(reply: Any) -> None:
    decoded = decode_reply(reply, 1)
    assert isinstance(decoded, Happened) or len(decoded) == 1


def test_the_fuzzed_cases_are_decode_failures_of_their_call() -> None:
    # The 1,000-deep one is pinned here, not as an @example: hypothesis cannot print it.
    for outcome in ([[0], None, 1.0], [0, None, 10**400], nested(1000), [0, None, math.nan], [True, None, 1]):
        happened, why, ms = decode_outcome(outcome)
        assert happened is Happened.DECODE_FAILED and len(why) < 400 and ms >= 0, outcome


def test_a_good_outcome_still_decodes() -> None:
    assert decode_outcome([protocol.OK, codec.pack({"a": [1, 2]}), 12]) == (None, {"a": [1, 2]}, 12.0)
    assert decode_outcome([protocol.NOT_RUN, None, 0.0]) == (Happened.NOT_RUN, None, 0.0)


def test_text_kept_about_hostile_values_is_bounded() -> None:
    assert len(shown(nested(1000))) <= 200 and len(shown(10**5000)) <= 200
    text = failure_text("w", Happened.TASK_RAISED, {"type": nested(1000), "message": 10**5000})
    assert len(text) < 500


row_kinds = st.integers(min_value=0, max_value=255)
rows = st.lists(st.tuples(row_kinds, values, elapsed).map(list), min_size=1, max_size=5)


def in_columns(outcomes: list[list[Any]]) -> dict[str, Any]:
    """The direct path's reply in columns of these outcomes (docs/protocol.md)."""
    kinds, vals, times = zip(*outcomes, strict=True)
    return {"kinds": bytes(kinds), "values": list(vals), "elapsed": list(times)}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows)
@example([[protocol.OK, codec.pack(1), 1.0], [protocol.OK, codec.pack(2), 2.0]])
@example([[protocol.OK, codec.pack(1), 1.0], [protocol.ERROR, codec.pack({"type": "E"}), 2.0]])
@example([[protocol.OK, codec.pack(1), 1.0], [protocol.OK, b"\xc1", 2.0]])
@example([[protocol.OK, codec.pack(1), math.nan], [protocol.OK, codec.pack(2), 2.0]])
def test_a_reply_in_columns_decodes_as_the_same_reply_in_rows(outcomes: list[list[Any]]) -> None:
    n = len(outcomes)
    as_rows = {"outcomes": [list(o) for o in outcomes]}
    assert repr(decode_reply(in_columns(outcomes), n)) == repr(decode_reply(as_rows, n))
    assert repr(ok_columns(in_columns(outcomes), n)) == repr(ok_columns(as_rows, n))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["kinds", "values", "elapsed", "outcomes"]), structures),
    st.integers(min_value=1, max_value=3),
)
@example({"kinds": b"\x00\x00", "values": [codec.pack(1)], "elapsed": [1.0, 1.0]}, 2)
@example({"kinds": b"\x00", "values": [codec.pack(1)], "elapsed": [1.0]}, 2)
@example({"kinds": "\x00\x00", "values": [codec.pack(1)] * 2, "elapsed": [1.0, 1.0]}, 2)
def test_any_reply_in_columns_decodes_to_a_row_or_one_outcome_per_call(reply: Any, n: int) -> None:
    decoded = decode_reply(reply, n)
    assert isinstance(decoded, Happened) or len(decoded) == n
    columns = ok_columns(reply, n)
    assert columns is None or len(columns[0]) == len(columns[1]) == n
