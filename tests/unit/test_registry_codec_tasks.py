"""Name-server naming scheme, the pipe codec and the built-in tasks, without sockets."""

from __future__ import annotations

import pytest

from pyrocluster import codec, protocol, tasks
from pyrocluster.config import Settings, check_bind, parse_address
from pyrocluster.nameserver import registry


def test_parse_listing_groups_objects_by_worker():
    listing = {}
    for service, port in (("compute", 1), ("control", 1), ("crawl", 1)):
        name = registry.object_name("w1", service)
        meta = registry.service_metadata("w1", service, ["gpu"], 4 if service != "crawl" else 16)
        listing[name] = (f"PYRO:{name}@127.0.0.1:400{port}", meta)
    orphan = registry.object_name("w2", "compute")  # no control object: not a usable worker
    listing[orphan] = (f"PYRO:{orphan}@127.0.0.1:4002", registry.service_metadata("w2", "compute", [], 1))
    (entry,) = registry.parse_listing(listing)
    assert entry.name == "w1"
    assert entry.services == ["compute", "crawl"]
    assert entry.tags == frozenset({"gpu"})
    assert entry.slots["compute"] == 4 and entry.slots["crawl"] == 16
    assert entry.address == "127.0.0.1:4001"


def test_codec_round_trips_plain_values_and_names_the_bad_type():
    value = {"a": [1, 2.5, None, True, "x", b"\x00"], "big": 2**100, "s": {3}}
    assert codec.unpack(codec.pack(value)) == {**value, "s": [3]}
    with pytest.raises(codec.NotSendable, match="type object"):
        codec.pack([object()])


def test_codec_round_trips_int_keys_and_tuple_keys():
    value = {1: 2, 3: {4: [5]}, "s": {-7: "x"}, 2**70: "big"}
    assert codec.unpack(codec.pack(value)) == value
    assert codec.unpack(codec.pack({(1, 2): "t"})) == {(1, 2): "t"}


def test_pack_call_names_where_an_unsendable_argument_sits():
    import threading

    with pytest.raises(codec.NotSendable, match=r"args\[0\]\['when'\]: Event"):
        codec.pack_call([{"when": threading.Event()}], {})
    with pytest.raises(codec.NotSendable, match=r"kwargs\['n'\]\[1\]: object"):
        codec.pack_call([], {"n": [1, object()]})
    assert codec.unpack(codec.pack_call((1, {2: 3}), {"k": None})) == [[1, {2: 3}], {"k": None}]


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("args", "where"),
    [
        ([1, nested(1100)], r"args\[1\]\[0\]\[0\].*: nested more than 1000 levels deep"),
        (["ok", {"k": "a\udc80b"}], r"args\[1\]\['k'\]: a string with a lone surrogate at 1"),
        ([[10**5000]], r"args\[0\]\[0\]: an int of more than \d+ digits"),
    ],
)
def test_pack_call_names_the_place_of_a_value_msgpack_refuses_however_deep(args, where):
    """The search for the place keeps its own stack: a value nested past Python's recursion limit
    is a NotSendable naming it, not a RecursionError."""
    with pytest.raises(codec.NotSendable, match=where):
        codec.pack_call(args, {})
    value, depth = codec.unpack(codec.pack_call([nested(1000)], {}))[0][0], 0
    while value:
        value, depth = value[0], depth + 1
    assert depth == 1000  # as deep as msgpack goes is sent as it is


@pytest.mark.parametrize(
    "data", [b"", b"\x91", b"\xc1", codec.pack([1]) + b"x", b"\xc7\x01\x05a", b"\xc7\x01\x31z"]
)
def test_unpack_raises_only_decode_error(data):
    with pytest.raises(codec.DecodeError):
        codec.unpack(data)


def test_as_bytes_accepts_bytes_and_serpent_base64_only():
    import base64

    assert codec.as_bytes(b"ab") == b"ab" and codec.as_bytes(bytearray(b"ab")) == b"ab"
    assert codec.as_bytes({"data": base64.b64encode(b"ab").decode(), "encoding": "base64"}) == b"ab"
    for bad in ("ab", None, {"data": "!!", "encoding": "base64"}, {"data": "YQ=="}):
        with pytest.raises(codec.DecodeError):
            codec.as_bytes(bad)


def test_task_catalog_is_read_from_the_compute_object_only():
    listing = {}
    for service in ("compute", "control", "crawl"):
        name = registry.object_name("w1", service)
        tasks_offered = ["add", "mine.x"] if service == "compute" else ["ignored"]
        listing[name] = (
            f"PYRO:{name}@127.0.0.1:4001",
            registry.service_metadata("w1", service, [], 2, tasks_offered),
        )
    name = registry.object_name("w2", "control")
    listing[name] = (f"PYRO:{name}@127.0.0.1:4002", registry.service_metadata("w2", "control", [], 2))
    w1, w2 = registry.parse_listing(listing)
    assert w1.tasks == frozenset({"add", "mine.x"})
    assert w2.tasks == frozenset()


@pytest.mark.parametrize(
    "bad",
    [
        (
            "PYRO:x@127.0.0.1:1",
            {"pyrocluster.worker:bad", "pyrocluster.service:control", "pyrocluster.slots:two"},
        ),
        (
            "PYRO:x@127.0.0.1:1",
            {"pyrocluster.worker:bad", "pyrocluster.service:control", "pyrocluster.slots:-1"},
        ),
        ("PYRO:x@127.0.0.1:1", {"pyrocluster.worker:bad", "pyrocluster.slots:1e99"}),
        ("PYRO:x@127.0.0.1:1", [1, 2]),
        ("PYRO:x@127.0.0.1:1", "pyrocluster.worker:bad"),
        ("PYRO:x@127.0.0.1:1", None),
        "not a pair",
        None,
    ],
)
def test_parse_listing_skips_a_malformed_entry_and_keeps_the_others(bad, caplog):
    listing = {}
    for service in ("compute", "control"):
        name = registry.object_name("good", service)
        listing[name] = (f"PYRO:{name}@127.0.0.1:4001", registry.service_metadata("good", service, [], 3))
    listing["pyrocluster.worker.bad.control"] = bad
    with caplog.at_level("WARNING", logger="pyrocluster.nameserver.registry"):
        entries = registry.parse_listing(listing)
    assert [e.name for e in entries] == ["good"]
    assert entries[0].slots["compute"] == 3
    assert "pyrocluster.worker.bad.control" in caplog.text


def test_run_call_reports_an_unknown_task_as_its_own_kind():
    kind, error, _ = tasks.run_call("nope", [], {})
    assert kind == protocol.UNKNOWN_TASK and error["type"] == "UnknownTask"


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("add", [40, 2], 42),
        ("echo", [{"k": [1]}], {"k": [1]}),
        ("sleep", [0], 0),
        ("count_primes", [0, 100], 25),
        ("count_primes", [10, 2], 0),
        ("fib", [10], 55),
        ("sha256", ["abc"], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("word_count", ["a b a"], {"a": 2, "b": 1}),
    ],
)
def test_builtin_tasks(name, args, expected):
    kind, value, _ms = tasks.run_call(name, args, {})
    assert (kind, value) == (protocol.OK, expected)


def test_run_call_reports_failures_without_raising():
    kind, error, _ = tasks.run_call("fail", ["boom"], {})
    assert kind == protocol.ERROR and error["type"] == "RuntimeError" and error["message"] == "boom"
    assert "Traceback" in error["traceback"]
    assert "run_call" not in error["traceback"], "the runner's own frame is not the user's"
    assert tasks.run_call("sleep", [-1], {})[1]["type"] == "ValueError"
    assert tasks.run_call("count_primes", [0, 10**12], {})[1]["type"] == "ValueError"


def test_task_decorator_registers_under_a_chosen_name():
    @tasks.task(name="stats.mean_test")
    def mean(values):
        return sum(values) / len(values)

    try:
        assert tasks.run_call("stats.mean_test", [[1, 2, 3]], {})[1] == 2
    finally:
        del tasks.REGISTRY["stats.mean_test"]


def test_addresses_and_bind_policy():
    assert parse_address("10.0.0.1:9091") == ("10.0.0.1", 9091)
    assert parse_address("example") == ("example", 9090)
    with pytest.raises(ValueError):
        parse_address("host:99999")
    check_bind("127.0.0.5", Settings(), insecure=False)
    check_bind("0.0.0.0", Settings(secret=b"s"), insecure=False)
    check_bind("0.0.0.0", Settings(), insecure=True)
    with pytest.raises(ValueError, match="without a cluster secret"):
        check_bind("0.0.0.0", Settings(), insecure=False)


def test_pack_after_a_refused_value_starts_clean():
    with pytest.raises(codec.NotSendable):
        codec.pack({"a": [1, 2, {3: object()}]})
    assert codec.unpack(codec.pack(["next"])) == ["next"]
