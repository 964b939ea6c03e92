"""When a real slot process opens its direct endpoint: once its pipe is idle (``first_batch_wait_s``
without a first batch, ``open_when_idle_s`` after one), never while batches keep it busy, and
without loading the endpoint's code (Pyro5) before that."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrocluster import codec, protocol
from pyrocluster.config import Settings
from pyrocluster.slots.batch import Budget
from pyrocluster.slots.direct_spec import DirectSpec
from pyrocluster.slots.gate import Gate, Ticket
from pyrocluster.slots.process import ProcessSlots
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20
ENDPOINT_CODE = ("Pyro5", "pyrocluster.slots.direct", "pyrocluster.auth")
"""What a slot process loads for its direct endpoint."""
PROBE = f'''"""Tells which of the endpoint's modules the slot process has loaded."""
import sys
import time

from pyrocluster import task


@task
def endpoint_code(pause_s: float = 0.0) -> list:
    time.sleep(pause_s)
    return [m for m in {ENDPOINT_CODE!r} if m in sys.modules]
'''


def spec(first_batch_wait_s: float, open_when_idle_s: float = 3600) -> DirectSpec:
    return DirectSpec(
        Settings(), "127.0.0.1", None, "test.compute.0.direct", first_batch_wait_s, open_when_idle_s
    )


def lent_ports(slots: ProcessSlots) -> list[int]:
    assert slots.lender is not None
    return slots.lender.occupancy()[0]


def probe(slots: ProcessSlots, gate: Gate, pause_s: float) -> list[str]:
    """Run ``endpoint_code`` as one batch; what it found loaded."""
    ticket = Ticket(gate, "test", 0, 1)
    assert gate.enter(ticket)
    call = ["endpoint_code", codec.pack([[pause_s], {}]), 30.0]
    [outcome] = slots.run([call], Budget(MIB, MIB), ticket)
    assert outcome[0] == protocol.OK, outcome
    return list(codec.unpack(outcome[1]))


def test_a_new_slot_runs_its_first_batch_without_loading_the_endpoint(tmp_path: Path) -> None:
    (tmp_path / "probe_tasks.py").write_text(PROBE)
    slots = ProcessSlots(1, [str(tmp_path / "probe_tasks.py")], MIB, spec(first_batch_wait_s=3600))
    try:
        assert probe(slots, Gate(1), 0.0) == [], "the slot loaded its endpoint's code before its first batch"
    finally:
        slots.close()


def test_a_busy_slot_opens_its_endpoint_only_once_its_pipe_is_idle(tmp_path: Path) -> None:
    (tmp_path / "probe_tasks.py").write_text(PROBE)
    # Batches back to back for about three times the idle bound, each 0.3 s long: the gaps
    # between them are the worker's turnaround (milliseconds), far under the 1 s bound.
    idle_bound = spec(first_batch_wait_s=3600, open_when_idle_s=1.0)
    slots = ProcessSlots(1, [str(tmp_path / "probe_tasks.py")], MIB, idle_bound)
    gate = Gate(1)
    try:
        for _ in range(10):
            assert probe(slots, gate, 0.3) == [], "the slot opened its endpoint between busy batches"
        assert wait_for(lambda: lent_ports(slots), 30, what="the endpoint opened once the slot was idle")
    finally:
        slots.close()


def test_a_new_slot_without_a_batch_opens_its_endpoint_once_it_has_waited() -> None:
    slots = ProcessSlots(1, [], MIB, spec(first_batch_wait_s=0.2))
    try:
        assert wait_for(lambda: lent_ports(slots), 30, what="the endpoint opened without a batch")
    finally:
        slots.close()
