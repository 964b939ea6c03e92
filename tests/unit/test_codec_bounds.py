"""codec.unpack on hostile bytes: bounded time and memory, strict extensions, only DecodeError out."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import time
from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyrocluster import codec
from pyrocluster.slots.batch import decode_arguments

MERSENNE_61 = 2**61 - 1
"""CPython hashes an int modulo this prime: its multiples all hash to 0."""


def colliding_int_map(n: int) -> bytes:
    """A msgpack map of ``n`` big-int keys sharing one hash, built without a Python dict."""
    packer = msgpack.Packer(use_bin_type=True, default=codec._default)
    body = b"".join(packer.pack(MERSENNE_61 * (2**10 + i)) + packer.pack(i) for i in range(n))
    return b"\xdf" + n.to_bytes(4, "big") + body


@pytest.mark.parametrize("n", [20_000, 40_000])
def test_a_hash_flood_of_map_keys_is_refused_in_linear_time(n: int) -> None:
    data = colliding_int_map(n)
    start = time.thread_time()
    with pytest.raises(codec.DecodeError, match="keys of one hash"):
        codec.unpack(data)
    # It took 1.5 s (20,000 keys) and 6 s (40,000) before; about 0.05 s now. CPU time of this
    # thread, with a wide margin for a loaded machine.
    assert time.thread_time() - start < 0.5


def test_int_keyed_dicts_still_decode() -> None:
    values: list[Any] = [
        {i: i for i in range(100_000)},
        {2**i: i for i in range(3_500)},  # powers of two: 58 of one hash (2**61 hashes as 1)
        {-1: "a", -2: "b"},  # the one pair of small ints with equal hashes
        {(1, 2): "t", (3, (4, 5)): "u", 1.5: None, None: 1, True: 2, b"k": 3, float("inf"): 4},
    ]
    for value in values:
        assert codec.unpack(codec.pack(value)) == value
    nans = codec.unpack(codec.pack({float("nan"): 1, float("nan"): 2}))  # two keys: NaN != NaN
    assert sorted(nans.values()) == [1, 2]


def test_values_of_many_small_containers_still_decode() -> None:
    pairs = [[i % 100, i % 7] for i in range(200_000)]  # one list per 3 bytes
    assert codec.unpack(codec.pack(pairs)) == pairs
    singletons = [[i % 100] for i in range(200_000)]  # one list per 2 bytes: the most allowed
    assert codec.unpack(codec.pack(singletons)) == singletons
    assert codec.unpack(codec.pack([[]] * 1000)) == [[]] * 1000  # within the allowance


MEMORY_BOUND_BYTES_PER_BYTE = 40
"""docs/protocol.md: decoding costs at most about 40 bytes of memory per byte received."""


@pytest.mark.timeout(180)
def test_twenty_megabytes_of_empty_containers_are_refused_within_the_memory_bound() -> None:
    # 10 MB of empty arrays then 10 MB of empty maps, in one array (it decoded to 1.4 GB before).
    # Peak memory is measured in a process of its own (ru_maxrss counts the whole process).
    script = textwrap.dedent(
        """
        import gc, json, resource
        from pyrocluster import codec
        gc.disable()  # the lists hold no cycles: collecting only costs time (half of it), no memory
        n = 10_000_000
        data = b"\\xdd" + (2 * n).to_bytes(4, "big") + b"\\x90" * n + b"\\x80" * n
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            codec.unpack(data)
            error = None
        except codec.DecodeError as exc:
            error = str(exc)
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
        print(json.dumps({"bytes": len(data), "grown": grown, "error": error}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=170, check=True
    )
    report = json.loads(out.stdout)
    assert report["error"] and "list or dict per 2 bytes" in report["error"]
    assert report["grown"] < MEMORY_BOUND_BYTES_PER_BYTE * report["bytes"], report


def bigint_ext(digits: bytes) -> bytes:
    return msgpack.packb(msgpack.ExtType(0x31, digits))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (msgpack.packb(msgpack.Timestamp(1, 0)), r"extension -1 \(msgpack timestamp\)"),
        (msgpack.packb(msgpack.Timestamp(2**40, 5)), r"extension -1 \(msgpack timestamp\)"),
        (msgpack.packb(msgpack.Timestamp(-(2**40), 5)), r"extension -1 \(msgpack timestamp\)"),
        (msgpack.packb([1, {"t": msgpack.Timestamp(1, 0)}]), r"extension -1 \(msgpack timestamp\)"),
        (msgpack.packb({msgpack.Timestamp(1, 0): 1}), r"extension -1 \(msgpack timestamp\)"),
        (b"\x81\x01\xd6\xff\x00\x00\x00\x01", r"extension -1 \(msgpack timestamp\)"),
        (bigint_ext(b"1_000"), "not a canonical decimal"),
        (bigint_ext(b" 7\n"), "not a canonical decimal"),
        (bigint_ext(b"+5"), "not a canonical decimal"),
        (bigint_ext(b"0123456789012345678901234567"), "not a canonical decimal"),
        (bigint_ext(b"-0"), "not a canonical decimal"),
        (bigint_ext("١٢٣".encode()), "not a canonical decimal"),
        (bigint_ext(b""), "not a canonical decimal"),
        (bigint_ext(b"7"), "64-bit int"),
        (bigint_ext(b"9" * 5000), "over the limit"),
        (msgpack.packb(msgpack.ExtType(5, b"x")), "unknown msgpack extension 5"),
    ],
)
def test_only_the_extensions_pack_makes_decode(data: bytes, message: str) -> None:
    with pytest.raises(codec.DecodeError, match=message):
        codec.unpack(data)


def test_big_ints_round_trip_in_canonical_form() -> None:
    for value in (2**64, -(2**63) - 1, 10**4000, -(10**300)):
        assert codec.unpack(codec.pack(value)) == value
        assert codec.unpack(codec.pack({value: [value]})) == {value: [value]}


plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.one_of(st.text(max_size=4), st.integers(), st.none(), st.booleans()), inner, max_size=4
        )
    ),
    max_leaves=12,
)


def mutations(value: Any) -> st.SearchStrategy[bytes]:
    data = codec.pack(value)
    return st.one_of(
        st.just(data),
        st.integers(0, max(len(data) - 1, 0)).map(lambda k: data[:k]),
        st.tuples(st.integers(0, max(len(data) - 1, 0)), st.integers(0, 255)).map(
            lambda kb: data[: kb[0]] + bytes([kb[1]]) + data[kb[0] + 1 :]
        ),
        st.binary(max_size=16).map(lambda tail: data + tail),
    )


def ext8(extension: tuple[int, bytes]) -> bytes:
    """``[ext]`` in msgpack's ext 8 form, for any code (msgpack.ExtType refuses negative ones)."""
    code, data = extension
    return b"\x91\xc7" + bytes([len(data)]) + code.to_bytes(1, "big", signed=True) + data


argument_bytes = st.one_of(
    st.binary(max_size=64),
    st.tuples(st.lists(plain, max_size=3), st.dictionaries(st.text(max_size=4), plain, max_size=3)).flatmap(
        lambda call: mutations([call[0], call[1]])
    ),
    plain.flatmap(mutations),
    st.tuples(st.integers(-128, 127), st.binary(max_size=12)).map(ext8),
)


@settings(max_examples=200, deadline=None)
@given(argument_bytes)
@example(b"\xd6\xff\x00\x00\x00\x01")
@example(b"\x92\x90\x80")
@example(b"\x92\x91\x91\x81\x91\x90\x01\x80")  # a list key inside a list key
@example(b"\x81\x81\x01\x01\x01")  # a map as a map key
@example(b"\x91" * 2000 + b"\x01")  # nested past msgpack's stack
def test_generated_argument_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    # What a worker does with a call's payload: arguments, or the line saying what is wrong.
    decoded = decode_arguments(data)
    assert isinstance(decoded, (tuple, str))
    with contextlib.suppress(codec.DecodeError):
        codec.unpack(data)


@settings(max_examples=150, deadline=None)
@given(plain)
def test_every_plain_value_round_trips(value: Any) -> None:
    assert codec.unpack(codec.pack(value)) == value
