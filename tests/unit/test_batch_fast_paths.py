"""The C-level passes over a whole batch give what the call-by-call paths give, bad calls included.

Each fast path (a submission packed at once, a request checked field by field at the worker, a
batch's arguments decoded together in the slot, a reply's outcomes decoded together, a batch
taken from a queue, a batch counted at once) falls back to the per-call path whenever anything is
unusual; these tests compare the two on generated batches, so one bad call still fails alone.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrocluster import codec, protocol
from pyrocluster.coordinator.calls import Batch, Call
from pyrocluster.coordinator.queues import WaitingRoom, take
from pyrocluster.coordinator.replies import decode_outcome, decode_reply
from pyrocluster.services.batchcolumns import column_rows
from pyrocluster.services.compute import _big_value_fields, check_call, plain_batch
from pyrocluster.services.taskstats import TaskStats
from pyrocluster.slots.batch import BatchRun, Budget
from pyrocluster.slots.process import _shortest_from

plain = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False),
        st.text(max_size=8),
        st.binary(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers()), inner, max_size=3),
    ),
    max_leaves=8,
)
good_outcome = st.builds(
    lambda v, ms: [protocol.OK, codec.pack(v), ms], plain, st.floats(min_value=0, max_value=1e6)
)
odd_outcome = st.one_of(
    st.tuples(
        st.one_of(st.integers(min_value=-1, max_value=8), st.just(True)),
        st.one_of(
            st.none(), st.binary(max_size=12), plain.map(codec.pack), st.just(b"\xd6\xff\x00\x00\x00\x00")
        ),
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(min_value=-5, max_value=2**70),
            st.just(10**400),
        ),
    ).map(list),
    st.just([protocol.OK, b"\xc1", 1.0]),
    st.just([protocol.OK, codec.pack(1), 2.0, 3]),
)


def same(a: Any, b: Any) -> bool:
    """Equal, NaN included (as the values decode)."""
    return repr(a) == repr(b)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(good_outcome, good_outcome, odd_outcome), min_size=1, max_size=12))
def test_a_reply_decodes_as_its_outcomes_one_by_one(outcomes: list[Any]) -> None:
    decoded = decode_reply({"outcomes": outcomes, "load": {}}, len(outcomes))
    assert isinstance(decoded, list)
    assert same(decoded, [decode_outcome(o) for o in outcomes])


def test_one_bad_value_among_good_ones_fails_its_call_alone() -> None:
    outcomes = [[protocol.OK, codec.pack(i), 0.5] for i in range(50)]
    outcomes[20][1] = b"\x92\x01"  # truncated
    outcomes[30][2] = math.nan
    decoded = decode_reply({"outcomes": outcomes}, 50)
    assert isinstance(decoded, list)
    assert [d[1] for i, d in enumerate(decoded) if i not in (20, 30)] == [
        i for i in range(50) if i not in (20, 30)
    ]
    assert decoded[20][0] is not None and decoded[30][0] is not None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(plain.map(codec.pack), st.binary(max_size=12)), max_size=12))
def test_unpack_each_is_unpack_of_each(datas: list[bytes]) -> None:
    def one(data: bytes) -> Any:
        try:
            return codec.unpack(data)
        except codec.DecodeError as exc:
            return exc

    assert same(codec.unpack_each(datas), [one(d) for d in datas])


def _each(datas: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for data in datas:
        try:
            out.append(codec.unpack(data))
        except codec.DecodeError as exc:
            out.append(exc)
    return out


@pytest.mark.parametrize(
    "datas",
    [
        [b"\x92\x01", b"\x02\x03"],  # together [1, 2] then 3: each alone is truncated, then 3
        [b"\x01\x02", b"\x03"],  # two values in one
        [b"\x01", b"", b"\x02"],  # none in one
        [b"\x01", b"\x92\x01"],  # the last cut short
        [b"\xdd\x7f\xff\xff\xff", b"\x01"],  # an array of 2**31 elements claimed in 5 bytes
        [codec.pack(i) for i in range(3000)] + [b"\xc1"],  # a byte msgpack never uses, last
    ],
)
def test_values_decoded_as_one_stream_are_each_values_own(datas: list[bytes]) -> None:
    """A batch's short values decoded together end where each value's bytes do, or are decoded
    one by one: a value never borrows its neighbour's bytes, a bad one fails alone."""
    decoded = codec.unpack_each(datas)
    assert same(decoded, _each(datas))
    assert len(decoded) == len(datas)


def test_a_long_batch_of_short_values_decodes_as_each() -> None:
    datas = [codec.pack("x" * 100 + str(i)) for i in range(2000)]  # over the stream's bound together
    datas[1000] = b"\x92\x01"
    assert same(codec.unpack_each(datas), _each(datas))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.lists(plain, max_size=3), st.dictionaries(st.text(max_size=3), plain, max_size=2)))
)
def test_a_submission_packs_as_each_call_does(calls: list[tuple[list[Any], dict[str, Any]]]) -> None:
    assert codec.pack_calls(calls) == [codec.pack_call(a, k) for a, k in calls]


def wire_call(i: int, **change: Any) -> list[Any]:
    fields = {
        "id": str(i),
        "name": "add",
        "payload": codec.pack([[i, i], {}]),
        "timeout": 10.0,
        "priority": 0,
    }
    fields.update(change)
    return list(fields.values())


def test_the_worker_checks_a_plain_batch_at_once_and_any_other_call_by_call() -> None:
    known = {"add"}
    good = [wire_call(i) for i in range(5)]
    ids, names, payloads, timeouts, priority = plain_batch(good, known, 1000)  # type: ignore[misc]
    assert list(ids) == [str(i) for i in range(5)] and set(names) == {"add"} and priority == 0
    odd = [
        {"timeout": math.nan},
        {"timeout": True},
        {"timeout": 10**400},
        {"timeout": 0},
        {"priority": True},
        {"priority": 2**40},
        {"id": ""},
        {"id": 7},
        {"name": "nope"},
        {"name": ["add"]},
        {"payload": "text"},
        {"payload": b"x" * 1001},
    ]
    for change in odd:
        batch = [*good, wire_call(9, **change)]
        assert plain_batch(batch, known, 1000) is None, change
    assert plain_batch([*good, [*wire_call(9), {"cpu": 1}]], known, 1000) is None  # resources
    assert plain_batch([*good, tuple(wire_call(9))], known, 1000) is None
    assert plain_batch(good[:1], known, 1000) == (("0",), ("add",), (good[0][2],), (good[0][3],), 0)
    for change in odd:  # a lone call (a direct call's) is checked field by field, as strictly
        assert plain_batch([wire_call(9, **change)], known, 1000) is None, change
    assert plain_batch([[*wire_call(9), {"cpu": 1}]], known, 1000) is None
    assert plain_batch([tuple(wire_call(9))], known, 1000) is None
    for change in odd[:8]:  # what check_call itself refuses, it refuses alone
        assert check_call(wire_call(9, **change)) is not None, change


def test_bad_arguments_fail_their_call_alone_in_a_batch_decoded_together() -> None:
    calls = [["add", codec.pack([[i, 1], {}]), 10.0] for i in range(6)]
    calls[2][1] = b"\x92\x01"
    calls[4][1] = codec.pack([[1], {3: 4}])
    run = BatchRun(calls, Budget(10**6, 10**6))
    run.run()
    kinds = [o[0] for o in run.outcomes]
    assert kinds == [protocol.OK, protocol.OK, protocol.ERROR, protocol.OK, protocol.ERROR, protocol.OK]
    assert [codec.unpack(run.outcomes[i][1]) for i in (0, 1, 3, 5)] == [1, 2, 4, 6]


def queued(sizes: list[int], done: list[bool]) -> deque[Call]:
    calls = deque()
    for size, settled in zip(sizes, done, strict=True):
        call = Call("compute", "add", [], {}, frozenset(), 10.0, 0, False)
        call.payload, call.done = b"x" * size, settled
        calls.append(call)
    return calls


def by_the_rule(
    calls: list[tuple[int, bool]], size: int, cap: int
) -> tuple[list[int], list[tuple[int, bool]]]:
    """``(sizes taken, what stays queued)`` by the rule: settled calls are dropped on the way; calls
    are taken in order while fewer than ``size`` and under ``cap`` bytes so far, the first always,
    a later one only if the total stays within ``cap`` (else it stays first in line)."""
    taken: list[int] = []
    at = 0
    while at < len(calls) and len(taken) < size and sum(taken) < cap:
        nbytes, settled = calls[at]
        if not settled and taken and sum(taken) + nbytes > cap:
            break
        if not settled:
            taken.append(nbytes)
        at += 1
    return taken, calls[at:]


@given(
    st.lists(st.tuples(st.integers(min_value=1, max_value=40), st.booleans()), max_size=15),
    st.integers(min_value=1, max_value=10),
    st.integers(min_value=1, max_value=120),
)
def test_take_takes_what_the_rule_says(calls: list[tuple[int, bool]], size: int, cap: int) -> None:
    queue = queued([s for s, _ in calls], [d for _, d in calls])
    taken = take(queue, size, cap)
    assert ([len(c.payload) for c in taken], [(len(c.payload), c.done) for c in queue]) == by_the_rule(
        calls, size, cap
    )


def test_add_all_queues_as_add_of_each() -> None:
    def calls() -> list[Call]:
        return [
            Call("compute", name, [], {}, frozenset(), 10.0, 0, False, priority=p)
            for name, p in [("add", 0), ("add", 0), ("echo", 0), ("add", 1), ("add", 0)]
        ]

    one, many = WaitingRoom(), WaitingRoom()
    for call in calls():
        one.add(call, 1.0)
    many.add_all(calls(), 1.0)
    assert [list(level) for level in one.levels()] == [list(level) for level in many.levels()]
    for req in one.requirements():
        assert [c.name for c in one.waiting(req) or ()] == [c.name for c in many.waiting(req) or ()]


@pytest.mark.parametrize(
    "elapsed",
    [
        [0.0, 0.5, 1.0, 1.0001, 5.0, 40.0, 999.0, 1000.0, 10**6, 3e5],
        [0.0, 0.001, 0.25, 1.0, 1],  # all in the first bucket (up to 1 ms)
        [0.5, 1.0000000000000002],  # just past it
    ],
)
def test_a_batch_of_ok_calls_counts_as_each_call_would(elapsed: list[float]) -> None:
    one, many = TaskStats(), TaskStats()
    one.add(["add"] * len(elapsed), [[protocol.OK, None, ms] for ms in elapsed])
    many.add_ok("add", elapsed)
    a, b = one.snapshot(), many.snapshot()
    assert a["tasks"]["add"]["counts"] == b["tasks"]["add"]["counts"]
    assert a["tasks"]["add"]["histogram"] == b["tasks"]["add"]["histogram"]
    assert math.isclose(a["tasks"]["add"]["sum_s"], b["tasks"]["add"]["sum_s"])


@given(st.lists(st.sampled_from([0.5, 1.0, 30.0]), max_size=8))
def test_the_shortest_timeout_from_each_call_on_is_a_running_minimum(timeouts: list[float]) -> None:
    expected = [min(timeouts[i:], default=math.inf) for i in range(len(timeouts) + 1)]
    assert _shortest_from(timeouts) == expected


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.booleans(), min_size=2, max_size=4),
    st.integers(min_value=-3, max_value=3),
    st.sampled_from([(), (("cpu", 2.0),), (("gpu", 1.0), ("memory", 1024.0))]),
)
def test_a_lone_call_is_requested_as_its_row_of_a_bigger_batch(
    keeps: list[bool], priority: int, ask: tuple[tuple[str, float], ...]
) -> None:
    calls = [Call("compute", "add", [i, 1], {}, frozenset(), 5.0, 0, False, priority=priority, resources=ask)
             for i in range(len(keeps))]  # fmt: skip
    for call, keep in zip(calls, keeps, strict=True):
        call.keep = keep
        call.payload = codec.pack([call.args, call.kwargs])
    whole = Batch(calls[0].requirement, calls).request("me")  # as columns: one task, one timeout
    for i, call in enumerate(calls):
        alone = Batch(call.requirement, [call]).request("me")
        assert alone["from"] == "me" and alone["calls"] == [column_rows(whole)[i]]
        assert alone.get("keep") == ([str(call.id)] if call.keep else None)
        assert "fetch" not in alone


@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), min_size=2, max_size=6))
def test_a_batch_asks_to_keep_exactly_its_kept_calls(keeps: list[bool]) -> None:
    calls = [Call("compute", "add", [i, 1], {}, frozenset(), 5.0, 0, False) for i in range(len(keeps))]
    for call, keep in zip(calls, keeps, strict=True):
        call.keep = keep
        call.payload = codec.pack([call.args, call.kwargs])
    request = Batch(calls[0].requirement, calls).request("me")
    kept = [str(c.id) for c in calls if c.keep]
    assert request.get("keep", []) == kept
    assert _big_value_fields(request)[0] == set(kept)


@pytest.mark.parametrize(
    ("keep", "ids"),
    [(["a", "b"], {"a", "b"}), (["a", 1, None, "b"], {"a", "b"}), ([], set()), ("a", set()), (None, set())],
)
def test_the_worker_reads_the_kept_ids_it_can(keep: Any, ids: set[str]) -> None:
    assert _big_value_fields({"keep": keep})[0] == ids
