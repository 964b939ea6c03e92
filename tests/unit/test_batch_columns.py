"""A batch's calls as columns (docs/protocol.md, "Calls as columns"): what the coordinator sends
as columns and what as rows, that columns are checked as the rows they stand for (at the worker
and at a slot), and that a big payload among them still travels as an attachment."""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import socket
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrocluster import attachments, codec, protocol
from pyrocluster.config import MIN_VALUE_LIMIT_BYTES, Settings
from pyrocluster.coordinator import bigmessages
from pyrocluster.coordinator.calls import Batch, Call
from pyrocluster.services.batchcolumns import MAX_ID_CHARS, column_rows, columns_reply, plain_columns
from pyrocluster.services.compute import plain_batch, receive_attached
from pyrocluster.slots.direct import DirectService
from pyrocluster.slots.share import SlotShare
from pyrocluster.valueref import ValueRef
from tests.unit.test_direct_batches import service

P = codec.pack([[1, 2], {}])


def calls_of(*timeouts: float, service: str = "compute", ask: tuple = (), priority: int = 0) -> list[Call]:
    made = [Call(service, "add", [i, 1], {}, frozenset(), t, 0, False, priority=priority, resources=ask)
            for i, t in enumerate(timeouts)]  # fmt: skip
    for call in made:
        call.payload = codec.pack([call.args, call.kwargs])
    return made


def request_of(calls: list[Call]) -> dict[str, Any]:
    return Batch(calls[0].requirement, calls).request("me")


def test_several_compute_calls_of_one_timeout_go_as_columns() -> None:
    calls = calls_of(5.0, 5.0, 5.0, priority=3)
    assert request_of(calls) == {
        "from": "me",
        "task": "add",
        "ids": [str(c.id) for c in calls],
        "payloads": [c.payload for c in calls],
        "timeout": 5.0,
        "priority": 3,
    }
    asking = request_of(calls_of(5.0, 5.0, ask=(("cpu", 2.0),)))
    assert asking["resources"] == {"cpu": 2.0} and "calls" not in asking


@pytest.mark.parametrize(
    "calls",
    [calls_of(5.0), calls_of(5.0, 6.0), calls_of(5.0, 5.0, service="crawl")],
    ids=["a lone call", "mixed timeouts", "crawl calls"],
)
def test_any_other_batch_goes_as_rows(calls: list[Call]) -> None:
    request = request_of(calls)
    assert "ids" not in request and len(request["calls"]) == len(calls)


def test_kept_and_fetched_calls_are_named_beside_the_columns() -> None:
    calls = calls_of(5.0, 5.0, 5.0)
    calls[1].keep = True
    calls[2].refs = (ValueRef("v1", "w", "PYRO:x@127.0.0.1:1", 10, "0" * 64),)
    request = request_of(calls)
    assert "ids" in request and request["keep"] == [str(calls[1].id)]
    assert list(request["fetch"]) == [str(calls[2].id)]


ids = st.one_of(
    st.text(min_size=1, max_size=4), st.just(""), st.just("x" * (MAX_ID_CHARS + 1)), st.integers()
)
payloads = st.one_of(st.just(P), st.binary(max_size=4), st.just(b"x" * 1001), st.text(max_size=2), st.none())
odd_or_good = {
    "task": st.sampled_from(["add", "add", "nope", ["add"], None]),
    "timeout": st.sampled_from([5.0, 5, 0, -1.0, math.nan, math.inf, True, "5", 10**400]),
    "priority": st.sampled_from([0, 0, 7, -(2**40), True, 1.5]),
}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(ids, payloads), min_size=1, max_size=5),
    st.fixed_dictionaries({}, optional=odd_or_good),
)
def test_columns_are_checked_as_the_rows_they_stand_for(calls: list[tuple[Any, Any]], shared: dict) -> None:
    request = {"from": "me", "ids": [c[0] for c in calls], "payloads": [c[1] for c in calls], **shared}
    rows = column_rows(request)
    assert rows is not None and [r[0] for r in rows] == request["ids"]
    as_rows = plain_batch(rows, {"add"}, 1000)
    as_columns = plain_columns(request, {"add"}, 1000)
    assert (as_columns is None) == (as_rows is None), (request, as_rows)
    if as_columns is not None and as_rows is not None:
        got_ids, task, got_payloads, timeout_s, priority = as_columns
        assert (list(got_ids), [task] * len(rows), list(got_payloads)) == tuple(map(list, as_rows[:3]))
        assert {timeout_s} == set(as_rows[3]) and priority == as_rows[4]


def test_columns_that_are_not_two_lists_of_one_length_stand_for_no_rows() -> None:
    for bad in ({"ids": ["1"], "payloads": [P, P]}, {"ids": "1", "payloads": [P]}, {"payloads": [P]}):
        assert column_rows(bad) is None, bad
    asking = column_rows(
        {"ids": ["1"], "payloads": [P], "task": "add", "timeout": 5.0, "resources": {"gpu": 1}}
    )
    assert asking == [["1", "add", P, 5.0, 0, {"gpu": 1}]]


def test_a_reply_in_columns_holds_no_value_big_enough_to_go_as_an_attachment() -> None:
    small = [[0, codec.pack(1), 1.0], [5, None, 0.0]]
    assert columns_reply(small) == {
        "kinds": b"\x00\x05",
        "values": [codec.pack(1), None],
        "elapsed": [1.0, 0.0],
    }
    assert columns_reply([*small, [0, b"x" * attachments.ATTACH_BYTES, 1.0]]) is None


def test_a_big_payload_among_columns_travels_as_an_attachment() -> None:
    big = b"\x02" * attachments.ATTACH_BYTES
    request = {"from": "c", "task": "echo", "ids": ["a", "b", "c"], "payloads": [P, big, P], "timeout": 5.0}
    out, bodies = bigmessages.detach(request)
    assert bodies == [big] and out["attached"] == [1] and out["attach"] == 1
    assert out["payloads"] == [P, None, P] and request["payloads"][1] is big, "the caller's request unchanged"
    plain, none = bigmessages.detach({**request, "payloads": [P, P, P]})
    assert none == [] and "attached" not in plain and plain["payloads"] == [P, P, P]
    odd, bodies = bigmessages.detach({**request, "payloads": [None, big, 7]})
    assert bodies == [big] and odd["payloads"] == [None, None, 7] and odd["attached"] == [1]


def good(**changes: Any) -> dict[str, Any]:
    request = {"from": "coord", "task": "add", "ids": ["1", "2"], "payloads": [P, P], "timeout": 5.0}
    request.update(changes)
    return {k: v for k, v in request.items() if v is not ...}


def test_the_slot_takes_the_columns_of_a_plain_batch_as_it_takes_its_rows() -> None:
    s = service()
    columns = request_of(calls_of(5.0, 5.0, 5.0))
    as_columns, as_rows = s.plain(columns), s.plain({"from": "me", "calls": column_rows(columns)})
    assert as_columns is not None and as_columns[-1] is True, "a request of columns is answered in columns"
    assert as_rows is not None and as_rows[-1] is False
    assert [list(f) if isinstance(f, tuple) else f for f in as_columns[:-1]] == [
        list(f) if isinstance(f, tuple) else f for f in as_rows[:-1]
    ]
    assert s.plain(good(priority=2)) is not None
    assert s.plain(good(attach=1)) is not None, "the wire asks for big values as attachments"


@pytest.mark.parametrize(
    "request_",
    [
        good(extra=1),
        good(attach="1"),
        good(keep=["1"]),
        good(resources={"cpu": 1}),
        good(**{"from": ""}),
        good(**{"from": 7}),
        good(**{"from": ...}),
        good(task="nope"),
        good(task=...),
        good(ids=("1", "2")),
        good(ids=["1"]),
        good(ids=["1", 2]),
        good(ids=["1", ""]),
        good(ids=[], payloads=[]),
        good(payloads=[P, "x"]),
        good(payloads=P),
        good(timeout=math.nan),
        good(timeout=True),
        good(timeout=...),
        good(priority=True),
        good(priority=2**40),
    ],
)
def test_columns_that_are_not_a_plain_batch_are_not_run_in_a_slot(request_: dict[str, Any]) -> None:
    assert service().plain(request_) is None


def test_a_payload_over_the_slots_value_cap_is_not_run_in_a_slot() -> None:
    s = service()
    cap = MIN_VALUE_LIMIT_BYTES
    s._settings = replace(s._settings, max_value_bytes=cap)
    assert s.plain(good(payloads=[P, b"x" * cap])) is not None
    assert s.plain(good(payloads=[P, b"x" * (cap + 1)])) is None


def lent(outcome: list[Any]) -> Any:
    """A slot's direct service, lent, whose every call ends as ``outcome``."""
    share = SlotShare(multiprocessing.get_context("spawn"), max_calls=2048, log_bytes=1 << 16)
    share.lend(True)
    run = (lambda call, cap, at: outcome, lambda calls, budget: [outcome] * len(calls))
    return DirectService(share, Settings.from_sources(), run, lambda message: None)


@pytest.mark.parametrize(
    "request_",
    [
        {"from": "c", "calls": [["1", "add", P, 5.0, 0]], "attach": 1},
        {"from": "c", "calls": [["1", "add", P, 5.0, 0], ["2", "add", P, 5.0, 0]], "attach": 1},
        {**good(), "attach": 1},
    ],
    ids=["a lone call", "a batch as rows", "a batch as columns"],
)
def test_a_big_value_goes_ahead_of_the_reply_as_an_attachment(request_: dict[str, Any]) -> None:
    big = codec.pack("x" * attachments.ATTACH_BYTES)
    s = lent([protocol.OK, big, 1.0])
    plain = s.plain(request_)
    assert plain is not None
    n = len(plain[1])
    left, right = socket.socketpair()
    with left, right, concurrent.futures.ThreadPoolExecutor(1) as reader:
        right.settimeout(10)
        bodies = reader.submit(lambda: [attachments.receive(right, 1 << 30) for _ in range(n)])
        reply = s.run(plain, left)
        assert reply == {"outcomes": [[protocol.OK, None, 1.0]] * n, "attached": list(range(n))}
        assert bodies.result(10) == [big] * n


def test_a_batch_of_small_values_as_columns_is_answered_in_columns() -> None:
    s = lent([protocol.OK, codec.pack(3), 1.0])
    reply = s.run(s.plain({**good(), "attach": 1}), None)
    assert reply == {"kinds": b"\x00\x00", "values": [codec.pack(3)] * 2, "elapsed": [1.0, 1.0]}


def test_a_worker_reads_the_attachments_of_a_request_of_columns_by_their_places() -> None:
    big = b"\x02" * attachments.ATTACH_BYTES
    request, bodies = bigmessages.detach(
        {"from": "c", "task": "echo", "ids": ["a", "b", "c"], "payloads": [big, P, big], "timeout": 5.0}
    )
    assert request["attached"] == [0, 2]
    left, right = socket.socketpair()
    with left, right, concurrent.futures.ThreadPoolExecutor(1) as writer:
        right.settimeout(10)
        sent = writer.submit(lambda: [attachments.send(left, body) for body in bodies])
        assert receive_attached(right, request, 1 << 30) == {0: big, 2: big}
        sent.result(10)
        with pytest.raises(attachments.AttachmentError, match="distinct places"):
            receive_attached(right, {**request, "attached": [3]}, 1 << 30)  # past its three ids


def test_a_direct_batch_is_counted_before_its_reply_goes_out() -> None:
    """A caller that reads the worker's counters once it has its reply finds its calls there."""
    s = lent([protocol.OK, codec.pack(3), 1.0])
    reply = s.run(s.plain(good()), None)
    assert reply["kinds"] == b"\x00\x00"
    assert s._share.take_ended() == [["coord", "add", b"\x00\x00", [1.0, 1.0]]]


def test_the_records_of_forty_big_batches_all_wait_for_a_worker_slow_to_read_them() -> None:
    s = lent([protocol.OK, codec.pack(3), 1.0])
    ids = [str(i) for i in range(2048)]
    for _ in range(40):  # about 800 KiB of records, and the worker reads none of them meanwhile
        assert "kinds" in s.run(s.plain(good(ids=ids, payloads=[P] * 2048)), None)
    records = s._share.take_ended()
    assert len(records) == 40 and all(len(r[2]) == 2048 for r in records)
