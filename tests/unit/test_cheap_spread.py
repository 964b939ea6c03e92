"""Single submits of cheap calls over many one-slot workers: how many workers they reach is how
many batches they make, whatever the replies carry.

Cheap calls ride in at most ``CHEAP_IN_FLIGHT`` batches at once (``balancer.hold``), so a burst
of single submits makes about that many batches per round trip; equally free workers take turns,
so each batch goes to a worker that has had none until every worker has had one. A direct reply
carries no ``LOAD``: the turns must not depend on it.
"""

from __future__ import annotations

from typing import Any

import pytest

from pyrocluster import codec, protocol
from pyrocluster.coordinator.balancer import CHEAP_IN_FLIGHT
from pyrocluster.coordinator.calls import Batch
from tests.unit.test_dispatch_policy import Rig, entry

WORKERS = 8


def cheap_ok(value: Any) -> list[Any]:
    """An OK outcome that ran 1 us on its worker (a cheap call)."""
    return [protocol.OK, codec.pack(value), 0.001]


def new_batches(rig: Rig, seen: dict[str, int]) -> list[tuple[str, Batch]]:
    """Batches sent since the last look, with their workers, in no particular order."""
    out = []
    for name in rig.d.links:
        sent = rig.link(name).sent
        out += [(name, b) for b in sent[seen.get(name, 0) :]]
        seen[name] = len(sent)
    return out


@pytest.mark.parametrize("load", [None, {"slots": 1, "running": 0, "queued": 0}], ids=["direct", "run_batch"])
def test_a_burst_of_cheap_single_submits_gives_each_batch_to_a_worker_that_had_none(load: Any) -> None:
    rig = Rig(*(entry(f"w{i}") for i in range(WORKERS)), max_batch=2048)
    extra = {} if load is None else {"load": load}
    seen: dict[str, int] = {}

    def answer(name: str, batch: Batch) -> None:
        rig.reply(name, batch, [cheap_ok(0) for _ in batch.calls], **extra)

    for i in range(3):  # lone calls one at a time: the task is learnt to be cheap
        rig.call("add", i, i)
        ((name, batch),) = new_batches(rig, seen)
        answer(name, batch)
    out: list[tuple[str, Batch]] = []
    receivers: list[str] = []
    for i in range(400):  # the submitting loop; a reply comes back after every 7 submits
        rig.call("add", i, i)
        if i % 7 == 6 and out:
            answer(*out.pop(0))
        fresh = new_batches(rig, seen)
        receivers += [name for name, _ in fresh]
        out += fresh
        assert len(out) <= CHEAP_IN_FLIGHT  # the rest wait for a reply, and ride in the next batch
    assert len(receivers) > WORKERS, receivers  # enough batches to reach every worker
    assert len(set(receivers[:WORKERS])) == WORKERS, receivers  # the first WORKERS batches: one each
    assert set(receivers) == set(rig.d.links)
