"""Which batches the direct path carries: a coordinator's plain batches, checked on both ends."""

from __future__ import annotations

import multiprocessing

from pyrocluster import codec
from pyrocluster.config import Settings
from pyrocluster.coordinator import direct
from pyrocluster.coordinator.calls import Batch, Call
from pyrocluster.slots.direct import BUSY, DirectService
from pyrocluster.slots.share import SlotShare
from pyrocluster.valueref import ValueRef


def batch(*timeouts: float, payload: bytes = b"\x92\x90\x80", resources: tuple = ()) -> Batch:
    calls = [Call("compute", "add", [], {}, frozenset(), t, 0, False) for t in timeouts]
    for call in calls:
        call.payload = payload
    return Batch(("compute", frozenset(), "add", 0, resources), calls)


def test_the_coordinator_sends_direct_only_plain_batches_of_one_timeout() -> None:
    assert direct.plain(batch(5.0)) and direct.plain(batch(5.0, 5.0, 5.0))
    assert not direct.plain(batch(5.0, 6.0)), "mixed timeouts: the slot's watch takes one"
    assert not direct.plain(batch(5.0, 5.0, resources=(("gpu", 1.0),)))
    assert not direct.plain(batch(5.0, 5.0, payload=b"x" * (1 << 20))), "a big argument goes beside"
    refs = batch(5.0, 5.0)
    refs.calls[1].refs = (ValueRef("v1", "w", "PYRO:x@127.0.0.1:1", 10, "0" * 64),)
    assert not direct.plain(refs)
    kept = batch(5.0, 5.0)
    kept.calls[0].keep = True
    assert not direct.plain(kept), "a job's big results stay on the worker: a slot keeps none"
    lone = batch(5.0)
    lone.calls[0].keep = True
    assert direct.plain(lone), "a lone call's one value comes back in its reply"


def service() -> DirectService:
    share = SlotShare(multiprocessing.get_context("spawn"), max_calls=4, log_bytes=1 << 16)
    return DirectService(share, Settings.from_sources(), (lambda *a: [], lambda *a: []), lambda m: None)


def request(*calls: list) -> dict:
    return {"from": "coord", "calls": [list(c) for c in calls]}


def test_the_slot_takes_a_batch_of_one_task_and_one_timeout_and_nothing_else() -> None:
    s = service()
    p = codec.pack([[1, 2], {}])
    taken = s.plain(request(["1", "add", p, 5.0, 0], ["2", "add", p, 5.0, 0]))
    assert taken == ("coord", ("1", "2"), "add", (p, p), 5.0, False, False)
    assert s.plain(request(["1", "add", p, 5.0, 0], ["2", "add", p, 6.0, 0])) is None
    assert s.plain(request(["1", "add", p, 5.0, 0], ["2", "echo", p, 5.0, 0])) is None
    assert s.plain(request(["1", "add", p, 5.0, 0], ["2", "add", "x", 5.0, 0])) is None
    assert s.plain({"from": "coord", "calls": []}) is None
    assert s.run(taken, None) is BUSY, "a slot not lent runs nothing"
