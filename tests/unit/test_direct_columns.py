"""A plain batch sent to a slot as columns (the direct path's request): what the coordinator
builds, what the slot takes, and what it refuses (then the batch goes the ordinary way)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from pyrocluster import codec
from pyrocluster.config import MIN_VALUE_LIMIT_BYTES
from pyrocluster.coordinator.direct import columns_request
from pyrocluster.services.compute import MAX_ID_CHARS
from tests.unit.test_direct_batches import batch, service

P = codec.pack([[1, 2], {}])


def good(**changes: Any) -> dict[str, Any]:
    request = {"from": "coord", "task": "add", "ids": ["1", "2"], "payloads": [P, P], "timeout": 5.0}
    request.update(changes)
    return {k: v for k, v in request.items() if v is not ...}


def test_the_coordinator_sends_a_plain_batch_as_columns_the_slot_takes_as_its_rows() -> None:
    sent = batch(5.0, 5.0, 5.0, payload=P)
    columns = columns_request(sent, "coord")
    ids = [str(c.id) for c in sent.calls]
    assert columns == {"from": "coord", "task": "add", "ids": ids, "payloads": [P, P, P], "timeout": 5.0}
    s = service()
    as_columns, as_rows = s.plain(columns), s.plain(sent.request("coord"))
    assert as_columns is not None and as_rows is not None
    assert as_columns[-1] is True and as_rows[-1] is False, "a request of columns is answered in columns"
    assert [list(f) if isinstance(f, tuple) else f for f in as_columns[:-1]] == [
        list(f) if isinstance(f, tuple) else f for f in as_rows[:-1]
    ]


def test_a_lone_call_goes_as_its_row() -> None:
    lone = batch(5.0, payload=P)
    assert "calls" in lone.request("coord") and service().plain(lone.request("coord")) is not None


@pytest.mark.parametrize(
    "request_",
    [
        good(extra=1),
        good(attach="1"),
        good(keep=["1"]),
        good(**{"from": ""}),
        good(**{"from": 7}),
        good(**{"from": ...}),
        good(task="nope"),
        good(task=["add"]),
        good(task=...),
        good(ids=("1", "2")),
        good(ids=["1"]),
        good(ids=["1", 2]),
        good(ids=["1", ""]),
        good(ids=["1", "x" * (MAX_ID_CHARS + 1)]),
        good(ids=[], payloads=[]),
        good(payloads=[P, "x"]),
        good(payloads=[P, None]),
        good(payloads=P),
        good(timeout=0),
        good(timeout=-1.0),
        good(timeout=math.nan),
        good(timeout=math.inf),
        good(timeout=True),
        good(timeout="5"),
        good(timeout=10**400),
        good(timeout=...),
    ],
)
def test_columns_that_are_not_a_plain_batch_are_not_run_here(request_: dict[str, Any]) -> None:
    assert service().plain(request_) is None


def test_a_payload_over_the_slots_value_cap_is_not_run_here() -> None:
    s = service()
    cap = MIN_VALUE_LIMIT_BYTES
    s._settings = replace(s._settings, max_value_bytes=cap)
    assert s.plain(good(payloads=[P, b"x" * cap])) is not None
    assert s.plain(good(payloads=[P, b"x" * (cap + 1)])) is None
