"""The pure side of resources: parsing amounts, the fit, the refusal reason, the patience rule,
and the worker's gate admitting by what is free (injected clock)."""

from __future__ import annotations

import threading
import time

import pytest

from pyrocluster.coordinator.balancer import choose
from pyrocluster.coordinator.book import WorkerRecord
from pyrocluster.coordinator.calls import asked
from pyrocluster.nameserver.registry import WorkerEntry, parse_listing, service_metadata
from pyrocluster.resources import (
    Patience,
    fits,
    frozen,
    full_ask,
    parse_mapping,
    parse_spec,
    shortfall,
    unfit_reason,
    units_free,
)
from pyrocluster.slots.admission import AdmissionOrder
from pyrocluster.slots.gate import Gate, Ticket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_parse_spec_units_and_names():
    assert parse_spec("cpu=8,memory=32GiB,licence=2") == {"cpu": 8, "memory": 32 * 2**30, "licence": 2}
    assert parse_spec("memory=1.5GB, gpu.mem=2") == {"memory": 1.5e9, "gpu.mem": 2}
    assert parse_spec("") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cpu", "not name=amount"),
        ("Cpu=1", "not a resource name"),
        ("cpu=-1", "not an amount"),
        ("cpu=2GiB", "unknown unit"),
        ("memory=3XB", "unknown unit"),
        ("licence=lots", "not an amount"),
    ],
)
def test_parse_spec_refuses_bad_parts_naming_them(text, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(text)


def test_mapping_rejects_booleans_and_non_string_names():
    with pytest.raises(ValueError, match="not an amount"):
        parse_mapping({"gpu": True})
    with pytest.raises(ValueError, match="not a resource name"):
        parse_mapping({3: 1})


def test_a_call_asks_one_cpu_unless_it_says_otherwise():
    assert full_ask(None) == {"cpu": 1}
    assert full_ask({"memory": 10}) == {"cpu": 1, "memory": 10}
    assert full_ask({"cpu": 0, "gpu": 1}) == {"gpu": 1}


GIB = 2**30
LICENCE_OR_MEMORY = [{"cpu": 4, "licence": 1, "memory": 2 * GIB}, {"cpu": 2, "memory": 23 * GIB}]
"""Each resource of a licence-and-4GiB ask is on some worker, the two together on none."""


def test_fit_shortfall_and_ranking():
    totals = [{"cpu": 4, "memory": 8}, {"cpu": 16, "memory": 2}]
    assert fits({"cpu": 4, "memory": 8}, totals[0]) and not fits({"gpu": 1}, totals[0])
    assert shortfall({"cpu": 2, "memory": 4}, totals) is None
    assert shortfall({"cpu": 1, "gpu": 1}, totals) == ("gpu", 0.0)
    assert shortfall({"cpu": 8, "memory": 4}, totals) == ("cpu", 16.0)  # each alone fits somewhere
    together = unfit_reason("t", {"cpu": 1, "licence": 1, "memory": 4 * GIB}, iter(LICENCE_OR_MEMORY))
    assert together is not None and together.startswith("task 't' asks 1 licence and 4GiB memory together")
    assert together.endswith("which no one live worker has (each lacks one of them)")
    reason = unfit_reason("train", {"gpu": 2}, [{"gpu": 1}])
    assert reason is not None and "'train'" in reason and "2 gpu" in reason and "largest: 1" in reason
    assert units_free({"cpu": 2, "licence": 1}, {"cpu": 8, "licence": 3}, {"cpu": 2}) == 3
    assert units_free({"cpu": 2, "licence": 1}, {"cpu": 8, "licence": 3}, {"licence": 3}) == 0


def test_patience_uses_the_injected_clock():
    clock = FakeClock()
    patience = Patience(2.0, clock)
    assert patience.may_pass(100.0)
    clock.now = 102.0
    assert not patience.may_pass(100.0)


def test_order_starts_the_first_that_fits_and_stops_at_one_that_may_not_be_passed():
    order: AdmissionOrder[str] = AdmissionOrder()
    for item in ("big", "small1", "small2"):
        order.push("A", 0, 1, item)
    fits_now = {"small1", "small2"}
    assert order.pop(lambda i: i in fits_now, lambda i: True) == "small1"
    assert order.pop(lambda i: i in fits_now, lambda i: False) is None  # big waited too long
    assert order.pop(lambda i: True, lambda i: False) == "big"
    assert order.pop() == "small2"


def gate_with(clock: FakeClock, slots: int = 2, **totals: float) -> Gate:
    return Gate(slots, totals, gpus=("3", "5"), patience=Patience(2.0, clock))


def test_gate_admits_by_resources_and_hands_out_gpus():
    gate = gate_with(FakeClock(), slots=3, licence=1)
    first = Ticket(gate, "A", 0, 1, {"cpu": 1, "licence": 1, "gpu": 1})
    assert gate.enter(first) and first.gpus == ["3"] and first.limits() == {"gpus": "3"}
    second = Ticket(gate, "A", 0, 1, {"cpu": 1, "gpu": 1})
    assert gate.enter(second) and second.gpus == ["5"]
    blocked = Ticket(gate, "B", 0, 1, {"cpu": 1, "licence": 1})
    gate.leave(second)
    # a licence holder is still running: the next licence ask waits (not granted yet)
    assert gate.resources()["licence"] == {"total": 1, "used": 1}
    gate._lock.acquire()
    try:
        assert not gate._can_start(blocked)
    finally:
        gate._lock.release()
    assert gate.load()["used"] == {"cpu": 1, "licence": 1, "gpu": 1}
    gate.leave(first)
    assert gate.resources()["gpu"] == {"total": 2, "used": 0} and "used" not in gate.load()


def queue(gate: Gate, sender: str, ask: dict | None = None) -> Ticket:
    """A ticket that enters the gate on a thread of its own: started once ``granted`` is set."""
    ticket = Ticket(gate, sender, 0, 1, ask)
    threading.Thread(target=gate.enter, args=(ticket,), daemon=True).start()
    deadline = time.monotonic() + 5
    while ticket.granted is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert ticket.granted is not None, "the ticket did not wait"
    return ticket


def started(ticket: Ticket) -> bool:
    return ticket.granted is not None and ticket.granted.is_set()


def test_a_big_ask_past_its_patience_holds_back_smaller_ones():
    clock = FakeClock()
    gate = gate_with(clock, slots=2)
    running = [Ticket(gate, "S", 0, 1) for _ in range(2)]
    for t in running:
        assert gate.enter(t)
    big = queue(gate, "B", {"cpu": 2})
    small = queue(gate, "S")
    gate.leave(running[0])  # within its patience the big ask is passed over
    assert started(small) and not started(big)
    again = queue(gate, "S")
    clock.now += 2.5
    gate.leave(running[1])  # one cpu free, big needs two: past its patience nothing else starts
    assert not started(again) and not started(big)
    gate.leave(small)  # two cpus free: the big ask starts, then the small one waits for it
    assert started(big) and not started(again)
    gate.leave(big)
    assert started(again)


def test_an_explicit_default_ask_is_no_ask_and_a_zero_cpu_is_kept():
    assert frozen({"cpu": 1}) == () and frozen(None) == () and frozen({}) == ()
    assert frozen({"licence": 1}) == (("cpu", 1.0), ("licence", 1))
    assert frozen({"cpu": 0}) == (("cpu", 0),)


def record(name: str, **totals: float) -> WorkerRecord:
    uris = {"compute": f"PYRO:{name}.compute@127.0.0.1:1", "control": f"PYRO:{name}.control@127.0.0.1:1"}
    entry = WorkerEntry(
        name, uris, {"compute": 2, "control": 2}, frozenset(), frozenset({"t"}), resources=totals
    )
    return WorkerRecord(entry, max_batch=16)


def test_the_coordinator_sends_only_where_the_totals_fit_and_ranks_by_what_is_free():
    small, big = record("small", cpu=2, licence=1), record("big", cpu=2, licence=4)
    plain = record("plain", cpu=2)
    req = ("compute", frozenset(), "t", 0, frozen({"licence": 2}))
    assert [r.offers(req) for r in (small, big, plain)] == [False, True, False]
    one = ("compute", frozenset(), "t", 0, frozen({"licence": 1}))
    big.observe_load({"slots": 2, "running": 1, "queued": 0, "used": {"cpu": 1, "licence": 3}})
    small.observe_load({"slots": 2, "running": 0, "queued": 0})
    assert (
        choose([big, small], "compute", 0.0, 0, asked(one)) is small
    )  # 1 licence free on each: small has 2 cpus
    small.observe_load({"slots": 2, "running": 1, "queued": 0, "used": {"cpu": 1, "licence": 1}})
    assert choose([small, big], "compute", 0.0, 0, asked(one)) is big


def test_registration_metadata_carries_the_totals_and_a_malformed_amount_is_skipped():
    meta = service_metadata("w", "compute", [], 2, ["t"], {"cpu": 2.0, "memory": 2.0**34, "licence": 2.0})
    control = service_metadata("w", "control", [], 2)
    listing = {
        "pyrocluster.worker.w.compute": ("PYRO:a@h:1", meta),
        "pyrocluster.worker.w.control": ("PYRO:b@h:1", control),
    }
    (entry,) = parse_listing(listing)
    assert entry.resources == {"cpu": 2.0, "memory": 2.0**34, "licence": 2.0}
    bad = {*meta, "pyrocluster.resource:licence=lots"}
    listing["pyrocluster.worker.w.compute"] = ("PYRO:a@h:1", bad)
    (entry,) = parse_listing(listing)
    assert "compute" not in entry.uris  # the malformed object is skipped, the worker's control stays


@pytest.mark.parametrize("amount", [0.5, "1.5", 2.25])
def test_a_share_of_a_gpu_is_refused_as_no_call_would_get_a_device(amount):
    with pytest.raises(ValueError, match="is not a whole number of devices"):
        parse_mapping({"gpu": amount})
    assert parse_mapping({"gpu": 2.0, "cpu": 0.5}) == {"gpu": 2.0, "cpu": 0.5}
