"""A worker's kept values: the memory bound and spilling, freeing, idle expiry, references, and
arguments with references replaced by the values' bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pyrocluster import codec
from pyrocluster.config import Settings
from pyrocluster.jobs.values import ValueFileWriter
from pyrocluster.services.values import ValueKeeper
from pyrocluster.services.valuestore import ValueStore
from pyrocluster.valueref import ValueRef, refs_in


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_values_past_the_memory_bound_are_spilled_oldest_first_and_read_back(tmp_path):
    store = ValueStore(memory_bytes=250, folder=tmp_path)
    ids = [store.keep(bytes([n]) * 100, "job")[0] for n in range(4)]
    assert store.usage() == (4, 200, 200)  # the two oldest went to disk
    assert len(list(tmp_path.iterdir())) == 2
    for n, value_id in enumerate(ids):
        assert store.read(value_id, 90, 50) == bytes([n]) * 10
        assert store.whole(value_id) == bytes([n]) * 100
    assert store.free("someone else") == 0
    assert store.free("job", ids[:1]) == 1 and store.read(ids[0], 0, 1) is None
    store.close()
    assert list(tmp_path.iterdir()) == [] and store.usage() == (0, 0, 0)


def test_a_value_nobody_used_for_idle_s_is_dropped():
    clock = Clock()
    store = ValueStore(idle_s=10, clock=clock)
    old, _ = store.keep(b"x" * 10, "job")
    clock.now = 8
    used, _ = store.keep(b"y" * 10, "job")
    clock.now = 15
    assert store.read(used, 0, 1) == b"y"  # used at 15
    clock.now = 19
    store.keep(b"z", "job")
    assert store.read(old, 0, 1) is None and store.read(used, 0, 1) == b"y"


def test_a_reference_round_trips_and_bad_ones_are_refused():
    ref = ValueRef("a" * 32, "w1", "PYRO:x@127.0.0.1:1", 5, "0" * 64, "make")
    back = codec.unpack(codec.pack({"v": [ref, 1]}))
    assert back["v"][0] == ref and back["v"][0].source == "make"
    assert refs_in([1, {"a": (ref,)}, "x"]) == [ref]
    bad = codec.pack(ValueRef("a", "w", "u", 5, "not hex", ""))
    with pytest.raises(codec.DecodeError, match="value reference"):
        codec.unpack(bad)


class AnyHolder:
    """Every reference's address allowed (the name-server check has its own integration test)."""

    def why_not(self, ref: ValueRef) -> None:
        return None


def test_arguments_get_the_kept_values_in_place_of_their_references():
    store = ValueStore()
    keeper = ValueKeeper(store, Settings(), "w1", "PYRO:values@127.0.0.1:1", AnyHolder())  # type: ignore[arg-type]
    big = np.arange(300_000, dtype=np.float64)
    outcome = keeper.keep("job", [0, codec.pack(big), 1.0])
    ref = codec.unpack(outcome[1])
    assert isinstance(ref, ValueRef) and ref.size > 2**20 and ref.holder == "w1"
    small = [0, codec.pack(3), 1.0]
    assert keeper.keep("job", small) is small  # small results travel in the reply
    fields = [[ref.id, ref.holder, ref.uri, ref.size, ref.sha256, ref.source]]
    payload = codec.pack([[ref, "x", ref], {"k": ref}])
    args, kwargs = codec.unpack(keeper.resolve(payload, fields))
    assert args[1] == "x" and all(np.array_equal(v, big) for v in (args[0], args[2], kwargs["k"]))
    gone = ValueRef("b" * 32, "w2", "PYRO:values@127.0.0.1:9", 10, "1" * 64)
    failed = keeper.resolve(codec.pack([[gone], {}]), [[gone.id, "w2", gone.uri, 10, "1" * 64, ""]])
    assert isinstance(failed, list) and codec.unpack(failed[1])["type"] == "ValueGone"


@pytest.mark.parametrize(
    "value",
    [
        np.arange(300_000, dtype=">i4").reshape(1000, 300),
        np.asfortranarray(np.arange(200_000.0).reshape(400, 500)),
        np.array(["2026-01-01"] * 200_000, dtype="datetime64[ns]"),
    ],
)
def test_an_array_arriving_in_chunks_is_written_as_the_npy_numpy_reads(value):
    data = codec.pack(value)
    out = io.BytesIO()
    writer = ValueFileWriter(out)
    for at in range(0, len(data), 7919):  # chunks that split the header too
        writer.feed(memoryview(data)[at : at + 7919])
    writer.end()
    assert writer.kind == "ndarray"
    back = np.load(io.BytesIO(out.getvalue()), allow_pickle=False)
    assert back.dtype == value.dtype and np.array_equal(back, value)
    assert back.flags.f_contiguous == value.flags.f_contiguous
