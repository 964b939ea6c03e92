"""Results lines: valid JSON, one spelling on orjson's path and the careful path, no colliding keys."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyrocluster.jobs import recordjson
from pyrocluster.jobs.results import ResultsStore, encode_or_failure

NAN, INF = float("nan"), float("inf")


def strict_json(line: bytes) -> Any:
    """The line read by RFC 8259: no NaN or Infinity tokens (the standard library accepts them)."""
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    return json.loads(line, parse_constant=lambda name: pytest.fail(f"not JSON: the token {name}"))


def written(tmp_path: Path, records: list[dict[str, Any]]) -> list[bytes]:
    """The lines the results store writes for ``records`` (its inline orjson path first)."""
    store = ResultsStore(tmp_path / "r.jsonl")
    store.open(resume=False)
    store.append_many(records)
    store.close(compact=False)
    return (tmp_path / "r.jsonl").read_bytes().splitlines(keepends=True)


QUOTED_CASES = [
    ({"id": "a", "result": [NAN]}, {"id": "a", "result": [None]}),
    ({"id": "b", "result": [NAN, 2**64]}, {"id": "b", "result": [None, 2**64]}),
    ({"id": "c", "result": [NAN, "\ud800"]}, {"id": "c", "result": [None, "\ud800"]}),
    ({"id": "d", "result": {NAN, 1.0}, "big": 2**64}, {"id": "d", "result": [1.0, None], "big": 2**64}),
    (
        {"id": "e", "result": {None: 1, INF: 2, -INF: 3}},
        {"id": "e", "result": {"null": 1, "Infinity": 2, "-Infinity": 3}},
    ),
    (
        {"id": "f", "args": [datetime.date(2026, 12, 1)], "big": 2**64},
        {"id": "f", "args": ["2026-12-01"], "big": 2**64},
    ),
]


@pytest.mark.parametrize(("record", "expected"), QUOTED_CASES, ids=[c[0]["id"] for c in QUOTED_CASES])
def test_the_quoted_cases_write_valid_identical_json_on_both_paths(
    tmp_path: Path, record: dict[str, Any], expected: dict[str, Any]
) -> None:
    (line,) = written(tmp_path, [record])
    assert line == recordjson.encode_record(record) == recordjson.careful(record)
    assert strict_json(line) == expected
    if record["id"] != "c":  # orjson reads no lone surrogate escape; the standard library does
        assert orjson.loads(line) == expected


def test_spec_9_types_are_spelled_alike_on_both_paths() -> None:
    when = datetime.datetime(
        2026, 12, 1, 8, 30, 5, 250, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    )
    value = {
        "datetime": when,
        "naive": when.replace(tzinfo=None),
        "date": when.date(),
        "time": when.time(),
        "timedelta": datetime.timedelta(days=1, microseconds=5),
        "decimal": decimal.Decimal("1.10"),
        "uuid": uuid.UUID(int=7),
        "bytes": b"hi",
    }
    expected = {
        "datetime": "2026-12-01T08:30:05.000250+05:30",
        "naive": "2026-12-01T08:30:05.000250",
        "date": "2026-12-01",
        "time": "08:30:05.000250",
        "timedelta": 86400.000005,
        "decimal": "1.10",
        "uuid": "00000000-0000-0000-0000-000000000007",
        "bytes": {"$base64": "aGk="},
    }
    fast = recordjson.encode_record({"id": "x", "result": value})
    assert fast == recordjson.careful({"id": "x", "result": value})
    # An int beyond 64 bits sends the whole record down the careful path: the rest is unchanged.
    assert recordjson.encode_record({"id": "x", "result": value, "big": 2**70}).startswith(
        fast[:-2] + b',"big":'
    )
    assert strict_json(fast)["result"] == expected
    date_keys = recordjson.encode_record({"id": "x", "result": {datetime.date(2026, 1, 2): 1, 3: 4}})
    assert strict_json(date_keys)["result"] == {"2026-01-02": 1, "3": 4}


@pytest.mark.parametrize(
    ("keys", "spelling"),
    [
        ({1: "a", "1": "b"}, '"1"'),
        ({None: "a", "null": "b"}, '"null"'),
        ({INF: "a", "Infinity": "b"}, '"Infinity"'),
        ({1.5: "a", "1.5": "b"}, '"1.5"'),
        ({True: "a", "true": "b"}, '"true"'),
        ({float("nan"): "a", float("nan"): "b"}, '"NaN"'),
    ],
)
def test_keys_spelled_alike_make_the_record_not_recordable(keys: dict[Any, str], spelling: str) -> None:
    record = {"id": "k", "status": "ok", "args": [1], "result": keys}
    failed, line = encode_or_failure(record)
    assert failed["status"] == "failed" and failed["error"]["type"] == "NotRecordable"
    assert f"both written {spelling}" in failed["error"]["message"]
    assert strict_json(line)["args"] == [1]


def test_non_string_keys_are_spelled_as_their_json() -> None:
    value = {1: "a", -(2**70): "b", 1.5: "c", 1e16: "d", -0.5: "e", None: "f", False: "g", NAN: "h"}
    line = recordjson.encode_record({"id": "x", "result": value})
    assert strict_json(line)["result"] == {
        "1": "a",
        str(-(2**70)): "b",
        "1.5": "c",
        "1e+16": "d",
        "-0.5": "e",
        "null": "f",
        "false": "g",
        "NaN": "h",
    }


def test_int_keys_alone_are_written_as_with_other_keys() -> None:
    ints = recordjson.encode_record({"id": "x", "result": {1: [2**70, NAN], -3: {4: "x"}}})
    mixed = recordjson.encode_record({"id": "x", "result": {1: [2**70, NAN], -3: {4: "x"}, None: 0}})
    assert ints == b'{"id":"x","result":{"1":[1180591620717411303424,null],"-3":{"4":"x"}}}\n'
    assert mixed == ints[:-3] + b',"null":0}}\n'


def test_nesting_past_orjsons_limit_is_written() -> None:
    deep: Any = 1
    for _ in range(600):
        deep = [deep]
    line = recordjson.encode_record({"id": "x", "result": deep, "k": {1: deep}})
    assert line.startswith(b'{"id":"x","result":' + b"[" * 600 + b"1" + b"]" * 600)
    assert strict_json(line)["k"]["1"] == deep


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.text(st.characters(blacklist_categories=()), max_size=6),  # lone surrogates included
    st.binary(max_size=6),
    st.dates(),
    st.times(),
    st.datetimes(timezones=st.none() | st.just(datetime.timezone.utc)),
    st.timedeltas(),
    st.decimals(places=3) | st.decimals(allow_nan=True, allow_infinity=True),
    st.uuids(),
)
keys = st.one_of(
    st.text(max_size=3),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.none(),
    st.booleans(),
    st.dates(),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.frozensets(st.integers() | st.floats() | st.text(max_size=3), max_size=4),
        st.dictionaries(st.text(max_size=3), inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=16,
)


@settings(max_examples=200, deadline=None)
@given(values, values)
@example([NAN, 2**64], {NAN})
@example({None: 1, INF: 2}, [datetime.date(2026, 12, 1)])
def test_generated_records_are_valid_json_and_the_same_on_both_paths(result: Any, args: Any) -> None:
    record = {"id": "x", "status": "ok", "result": result, "args": [args]}
    try:
        fast = orjson.dumps(record, default=recordjson.default, option=recordjson.OPTIONS)
    except TypeError:
        fast = None
    try:
        careful = recordjson.careful(record)
    except ValueError as exc:  # two keys spelled alike
        assert "both written" in str(exc)
        assert fast is None
        failed, line = encode_or_failure(record)
        assert failed["error"]["type"] == "NotRecordable"
        strict_json(line)
        return
    if fast is not None:
        assert fast == careful
    read = strict_json(careful)
    assert set(read) == set(record)
    if isinstance(result, float) and not math.isfinite(result):
        assert read["result"] is None
