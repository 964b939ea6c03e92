"""Where cheap calls go on many one-slot workers, and how many of their batches are out at once.

Cheap calls ride in at most ``CHEAP_IN_FLIGHT`` batches at once while the queue is short
(``balancer.hold``), and in at most ``most_in_flight`` however long it is; their batches go to
the same few workers, the first free ones from the coordinator's own place in the list
(``balancer.first_look``), whose processes are awake. Calls that take real time take turns over
every worker. A direct reply carries no ``LOAD``: none of this may depend on it.
"""

from __future__ import annotations

from typing import Any

import pytest

from pyrocluster import codec, protocol
from pyrocluster.coordinator.balancer import CHEAP_ENOUGH, CHEAP_IN_FLIGHT, REPLY_OVERDUE_S, most_in_flight
from pyrocluster.coordinator.calls import Batch, Call
from tests.conftest import wait_for
from tests.unit.test_dispatch_policy import Rig, entry

WORKERS = 8
LOADS = [None, {"slots": 1, "running": 0, "queued": 0}]
LOAD_IDS = ["direct", "run_batch"]


def outcome(value: Any, ms: float) -> list[Any]:
    """An OK outcome that ran ``ms`` on its worker (0.001: a cheap call)."""
    return [protocol.OK, codec.pack(value), ms]


def new_batches(rig: Rig, seen: dict[str, int]) -> list[tuple[str, Batch]]:
    """Batches sent since the last look, with their workers, in no particular order."""
    out = []
    for name in rig.d.links:
        sent = rig.link(name).sent
        out += [(name, b) for b in sent[seen.get(name, 0) :]]
        seen[name] = len(sent)
    return out


def submits(rig: Rig, load: Any, ms: float, count: int) -> list[str]:
    """``count`` single submits of a call that runs ``ms``, a reply after every 7th; the workers
    the batches went to, in order."""
    extra = {} if load is None else {"load": load}
    seen: dict[str, int] = {}

    def answer(name: str, batch: Batch) -> None:
        rig.reply(name, batch, [outcome(0, ms) for _ in batch.calls], **extra)

    for i in range(3):  # lone calls one at a time: the task's cost is learnt
        rig.call("add", i, i)
        ((name, batch),) = new_batches(rig, seen)
        answer(name, batch)
    out: list[tuple[str, Batch]] = []
    receivers: list[str] = []
    for i in range(count):
        rig.call("add", i, i)
        if i % 7 == 6 and out:
            answer(*out.pop(0))
        fresh = new_batches(rig, seen)
        receivers += [name for name, _ in fresh]
        out += fresh
        if ms < 0.2:
            assert len(out) <= CHEAP_IN_FLIGHT  # the rest wait for a reply, and ride in the next batch
    return receivers


@pytest.mark.parametrize("load", LOADS, ids=LOAD_IDS)
def test_a_burst_of_cheap_single_submits_stays_on_the_same_few_workers(load: Any) -> None:
    rig = Rig(*(entry(f"w{i}") for i in range(WORKERS)), max_batch=2048)
    receivers = submits(rig, load, 0.001, 400)
    assert len(receivers) > WORKERS, receivers  # enough batches to have reached every worker
    assert len(set(receivers)) <= CHEAP_IN_FLIGHT + 1, receivers  # but they went to the same few


@pytest.mark.parametrize("load", LOADS, ids=LOAD_IDS)
def test_single_submits_of_calls_that_take_real_time_take_turns_over_every_worker(load: Any) -> None:
    rig = Rig(*(entry(f"w{i}") for i in range(WORKERS)), max_batch=2048)
    receivers = submits(rig, load, 50.0, 60)
    assert len(set(receivers[:WORKERS])) == WORKERS, receivers  # the first WORKERS batches: one each
    assert set(receivers) == set(rig.d.links)


def chunk(n: int) -> list[Call]:
    return [Call("compute", "add", [i, i], {}, frozenset(), 10.0, 2, False) for i in range(n)]


def test_a_long_queue_of_cheap_calls_keeps_few_full_batches_out_on_many_idle_workers() -> None:
    """A map's chunks of 1,024 used to go out as they came, each to a worker of its own: 10-13
    batches of 1,024 in flight on 64 workers instead of 2-3 batches of 2,048."""
    rig = Rig(*(entry(f"w{i:02}") for i in range(64)), max_batch=2048)
    seen: dict[str, int] = {}
    rig.call("add", 1, 1)  # learnt cheap: 1 us a call, full-size batches
    ((name, batch),) = new_batches(rig, seen)
    rig.reply(name, batch, [outcome(2, 0.001)])
    cost = rig.d._costs[batch.cost_key]
    for _ in range(3):  # as after a few full batches
        cost.observe(2048, 0.002)
    most = most_in_flight(cost)
    out: list[tuple[str, Batch]] = []
    for _ in range(20):  # a map's chunks, submitted while no reply comes
        rig.d.submit(chunk(1024))
        out += new_batches(rig, seen)
        assert len(out) <= most
    assert [len(b.calls) for _, b in out] == [1024] * most  # then the queue waits for a reply
    assert rig.d.waiting_by_service() == {"compute": 20 * 1024 - sum(len(b.calls) for _, b in out)}
    while out:  # each reply sends the next full batch, to the same few workers
        name, batch = out.pop(0)
        rig.reply(name, batch, [outcome(0, 0.001) for _ in batch.calls])
        fresh = new_batches(rig, seen)
        assert all(len(b.calls) == 2048 for _, b in fresh[:-1])
        out += fresh
        assert len(out) <= most
    assert not rig.d.waiting_by_service()
    assert len({n for n in seen if seen[n]}) <= most + 1


def test_a_maps_first_tiny_batches_do_not_hold_back_its_first_full_ones() -> None:
    """A map submits chunks of 1, 2, 4 ... calls, so that its first results come at once. Its
    batches of 1 and 2 calls used to count against ``most_in_flight``: after the third batch the
    next full ones waited for a reply while the slots sat idle."""
    rig = Rig(*(entry(f"w{i}", slots=2) for i in range(4)), max_batch=2048)
    seen: dict[str, int] = {}
    rig.call("add", 1, 1)
    ((name, batch),) = new_batches(rig, seen)
    rig.reply(name, batch, [outcome(2, 0.001)])
    cost = rig.d._costs[batch.cost_key]
    for _ in range(3):  # as a map before this one taught it
        cost.observe(2048, 0.002)
    sizes = []
    for n in [2**k for k in range(11)] + [1024] * 4:  # the chunks of a map of 6,143 calls
        rig.d.submit(chunk(n))
        sizes += [len(b.calls) for _, b in new_batches(rig, seen)]
    most = most_in_flight(cost)
    assert sizes == [1, 2, 508, 512, 1024]  # up to ``most`` full batches out, not ``most`` batches
    assert len([size for size in sizes if size >= CHEAP_ENOUGH]) == most
    assert rig.d.waiting_by_service() == {"compute": 6143 - sum(sizes)}  # the rest wait for a reply


def a_cheap_map_on_16_workers() -> tuple[Rig, dict[str, int], Any]:
    """A rig of 16 one-slot workers where ``add`` is known cheap and a map of 20,480 calls was
    just submitted: the rig, what each worker was sent so far (for :func:`new_batches`), the cost."""
    rig = Rig(*(entry(f"w{i:02}") for i in range(16)), max_batch=2048)
    seen: dict[str, int] = {}
    rig.call("add", 1, 1)
    ((name, batch),) = new_batches(rig, seen)
    rig.reply(name, batch, [outcome(2, 0.001)])
    cost = rig.d._costs[batch.cost_key]
    for _ in range(3):
        cost.observe(2048, 0.002)
    rig.d.submit(chunk(20 * 1024))
    return rig, seen, cost


def test_a_worker_that_never_answers_a_cheap_batch_holds_only_that_batch() -> None:
    rig, seen, _ = a_cheap_map_on_16_workers()
    out = new_batches(rig, seen)
    stalled, _ = out.pop(0)  # its worker stops answering; the others' replies keep the rest moving
    while out:
        name, batch = out.pop(0)
        assert name != stalled
        rig.reply(name, batch, [outcome(0, 0.001) for _ in batch.calls])
        out += new_batches(rig, seen)
    assert not rig.d.waiting_by_service()  # every call but the stalled batch's ran elsewhere
    assert rig.d.in_flight() == len(rig.link(stalled).sent[-1].calls)


def test_when_every_cheap_batch_out_is_stuck_the_queue_goes_to_other_workers() -> None:
    """Stalled workers holding all of ``most_in_flight`` batches used to hold a map's queue until
    their probes set them aside (seconds): now only until ``REPLY_OVERDUE_S`` passes unanswered."""
    rig, seen, cost = a_cheap_map_on_16_workers()
    stuck = new_batches(rig, seen)  # their workers stop answering
    assert len(stuck) == most_in_flight(cost)

    def dispatch_after(seconds: float) -> list[tuple[str, Batch]]:
        rig.clock.now += seconds
        with rig.d._cond:
            rig.d._dispatch_ready()  # what the dispatcher's periodic check does
        return new_batches(rig, seen)

    assert dispatch_after(REPLY_OVERDUE_S / 2) == [], "a reply may yet come: the queue waits"
    moved = dispatch_after(REPLY_OVERDUE_S)
    assert moved, "no reply for REPLY_OVERDUE_S: the stuck batches hold only themselves"
    assert not {n for n, _ in moved} & {n for n, _ in stuck}
    while moved:  # the other workers answer and take the whole rest
        name, batch = moved.pop(0)
        rig.reply(name, batch, [outcome(0, 0.001) for _ in batch.calls])
        moved += new_batches(rig, seen)
    assert not rig.d.waiting_by_service()
    assert rig.d.in_flight() == sum(len(b.calls) for _, b in stuck)


def test_a_job_connects_ahead_to_the_workers_its_cheap_calls_will_use() -> None:
    rig = Rig(*(entry(f"w{i:02}") for i in range(64)), max_batch=2048)
    rig.d.open_channels("compute", 2, 4)

    def opened_to_four() -> set[str]:
        opened = {n for n in rig.d.links if rig.link(n).opened_ahead}
        return opened if len(opened) == 4 else set()

    opened = wait_for(opened_to_four, 10, interval_s=0.01, what="channels opened to 4 workers")
    seen: dict[str, int] = {}
    rig.call("add", 1, 1)
    ((name, batch),) = new_batches(rig, seen)
    rig.reply(name, batch, [outcome(2, 0.001)])  # learnt cheap
    rig.d.submit(chunk(3 * 1024))
    receivers = {n for n, _ in new_batches(rig, seen)}
    assert receivers and receivers <= opened, (receivers, opened)
