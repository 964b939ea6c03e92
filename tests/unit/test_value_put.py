"""Putting a value file on a worker: the file read back as the value's own encoding, and the
store's chunked puts with their limits."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from pyrocluster import codec, valueput
from pyrocluster.jobs.values import spill
from pyrocluster.nameserver import registry
from pyrocluster.nameserver.registry import WorkerEntry
from pyrocluster.services.valuestore import MAX_UPLOADS, UPLOAD_IDLE_S, PutRefused, ValueStore


def _joined(path, kind, chunk_bytes=None, monkeypatch=None):
    if chunk_bytes is not None:
        monkeypatch.setattr(valueput, "CHUNK_BYTES", chunk_bytes)
    size, chunks = valueput.encoded(path, kind)
    data = b"".join(chunks)
    assert len(data) == size
    return data


@pytest.mark.parametrize(
    "value",
    [
        np.arange(200_000, dtype=np.float64),
        np.asfortranarray(np.arange(120_000, dtype=">i4").reshape(300, 400)),
        np.zeros(70_000, dtype=[("a", "<i4"), ("b", "<f8")]),
        np.arange(100_000, dtype=np.int16).reshape(10, 100, 100)[:, ::2].copy(),
    ],
    ids=["float64", "fortran-big-endian", "structured", "3d"],
)
def test_an_npy_file_is_sent_as_the_arrays_own_encoding(tmp_path, monkeypatch, value):
    results = tmp_path / "job.results.jsonl"
    reference = spill({"id": "make", "result": value}, results)["result"]
    path = tmp_path / reference["$file"]
    assert reference["type"] == "ndarray"
    data = _joined(path, "ndarray", 4096, monkeypatch)  # small chunks: the header spans one
    assert data == codec.pack(value)
    back = codec.unpack(data)
    assert back.dtype == value.dtype and np.array_equal(back, value)


def test_a_msgpack_file_is_sent_as_it_is_and_others_are_not_put(tmp_path):
    results = tmp_path / "job.results.jsonl"
    value = {"blob": b"x" * 300_000, "n": [1, 2, 3]}
    reference = spill({"id": "make", "result": value}, results)["result"]
    path = tmp_path / reference["$file"]
    assert _joined(path, "msgpack") == path.read_bytes() == codec.pack(value)
    with pytest.raises(valueput.PutFailed):
        valueput.encoded(path, "DataFrame")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an array at all")
    with pytest.raises(valueput.PutFailed):
        valueput.encoded(bad, "ndarray")
    short = tmp_path / "short.npy"
    np.save(short, np.arange(1000.0))
    short.write_bytes(short.read_bytes()[:-8])  # a body shorter than its header says
    with pytest.raises(valueput.PutFailed):
        valueput.encoded(short, "ndarray")


def test_the_values_uri_is_the_compute_objects_on_the_same_daemon():
    compute = f"PYRO:{registry.object_name('w1', 'compute')}.abc123@127.0.0.1:4000"
    entry = WorkerEntry("w1", {"compute": compute})
    assert valueput.values_uri(entry) == f"PYRO:{registry.object_name('w1', 'values')}.abc123@127.0.0.1:4000"
    assert valueput.values_uri(WorkerEntry("w1", {"crawl": compute})) is None
    assert valueput.values_uri(WorkerEntry("w2", {"compute": compute})) is None  # not its own object


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_value_put_in_chunks_is_kept_like_a_result():
    store = ValueStore()
    data = bytes(range(256)) * 1000
    put = store.begin("job", len(data))
    assert store.add(put, "job", 0, data[:100_000]) == 100_000
    with pytest.raises(PutRefused):
        store.add(put, "job", 0, data[:10])  # out of order
    with pytest.raises(PutRefused):
        store.add(put, "other", 100_000, data[100_000:])  # another owner's put
    with pytest.raises(PutRefused):
        store.finish(put, "job", hashlib.sha256(data).hexdigest())  # not every byte yet
    put = store.begin("job", len(data))
    store.add(put, "job", 0, data)
    with pytest.raises(PutRefused):
        store.add(put, "job", len(data), b"more")  # past its size
    value_id, digest = store.finish(put, "job", hashlib.sha256(data).hexdigest())
    assert digest == hashlib.sha256(data).hexdigest()
    assert bytes(store.whole(value_id) or b"") == data
    assert store.info(value_id).owner == "job"  # type: ignore[union-attr]
    put = store.begin("job", 3)
    store.add(put, "job", 0, b"abc")
    with pytest.raises(PutRefused):
        store.finish(put, "job", hashlib.sha256(b"abd").hexdigest())  # not the value announced
    assert store.usage()[0] == 1


def test_puts_at_once_are_bounded_and_an_idle_one_is_dropped():
    clock = Clock()
    store = ValueStore(clock=clock)
    puts = [store.begin("job", 10) for _ in range(MAX_UPLOADS)]
    with pytest.raises(PutRefused):
        store.begin("job", 10)
    clock.now += UPLOAD_IDLE_S + 1
    store.begin("job", 10)  # the idle ones went
    with pytest.raises(PutRefused):
        store.add(puts[0], "job", 0, b"x")
