"""codec.pack_calls: a whole submission encoded at once, call by call exactly as pack_call does."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Any

import pytest

from pyrocluster import codec


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ([1, 2], {}),
        ((1, 2), {"x": [3]}),
        ([2**80, -(2**70)], {}),
        (["é", b"\x00", None, True, 1.5], OrderedDict(b=1, a=2)),
        ([{1, 2}], {}),
        ([], {"k": {"nested": [1, {"d": 2}]}}),
    ],
)
def test_each_call_encodes_as_pack_call_does(args: Any, kwargs: Any) -> None:
    assert codec.pack_calls([(args, kwargs)]) == [codec.pack_call(args, kwargs)]


def test_an_unsendable_call_fails_alone_naming_where() -> None:
    out = codec.pack_calls([([1], {}), ([1, {"when": datetime(2020, 1, 1), "x": object()}], {}), ([2], {})])
    assert out[0] == codec.pack_call([1], {}) and out[2] == codec.pack_call([2], {})
    assert isinstance(out[1], codec.NotSendable)
    assert str(out[1]) == "args[1]['x']: object cannot be sent (plain values only)"


def test_a_maps_chunk_encodes_as_pack_call_does_in_one_pass() -> None:
    chunk = [[1, 2], ["é", b"\x00", None], [2**80], [{"k": [1, {"d": 2}]}], [(1, 2)]]
    assert codec.pack_positional(chunk) == [codec.pack_call(args, {}) for args in chunk]


def test_a_maps_chunk_with_an_unsendable_value_or_a_big_array_is_left_to_pack_calls() -> None:
    np = pytest.importorskip("numpy")
    assert codec.pack_positional([[1], [object()], [2]]) is None
    big = np.zeros(codec.splice.SPLICE_BYTES // 8 + 1)
    assert codec.pack_positional([[1], [big]]) is None
    assert not codec.splice.deferred()  # no marker's body left waiting
    spliced = codec.pack_calls([([1], {}), ([big], {})])
    assert spliced[0] == codec.pack_call([1], {}) and len(spliced[1]) > big.nbytes
