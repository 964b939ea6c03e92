"""When a real slot process opens its direct endpoint: not before its first batch (which neither
waits for it nor finds Pyro5 loaded), right after that batch, and without one once it has waited
``first_batch_wait_s``."""

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

from pyrocluster import task


@task
def endpoint_code() -> list:
    return [m for m in {ENDPOINT_CODE!r} if m in sys.modules]
'''


def spec(first_batch_wait_s: float) -> DirectSpec:
    return DirectSpec(Settings(), "127.0.0.1", None, "test.compute.0.direct", first_batch_wait_s)


def lent_ports(slots: ProcessSlots) -> list[int]:
    assert slots.lender is not None
    return slots.lender.occupancy()[0]


def test_a_new_slot_runs_its_first_batch_without_the_endpoint_and_opens_it_right_after(
    tmp_path: Path,
) -> None:
    probe = tmp_path / "probe_tasks.py"
    probe.write_text(PROBE)
    # It would wait for a first batch far longer than this test runs: only the batch opens it.
    slots, gate = ProcessSlots(1, [str(probe)], MIB, spec(first_batch_wait_s=3600)), Gate(1)
    try:
        ticket = Ticket(gate, "test", 0, 1)
        assert gate.enter(ticket)
        [outcome] = slots.run([["endpoint_code", codec.pack([[], {}]), 30.0]], Budget(MIB, MIB), ticket)
        assert outcome[0] == protocol.OK
        assert codec.unpack(outcome[1]) == [], "the slot loaded its endpoint's code before its first batch"
        assert wait_for(lambda: lent_ports(slots), 30, what="the endpoint opened after the first batch")
    finally:
        slots.close()


def test_a_new_slot_without_a_batch_opens_its_endpoint_once_it_has_waited() -> None:
    slots = ProcessSlots(1, [], MIB, spec(first_batch_wait_s=0.2))
    try:
        assert wait_for(lambda: lent_ports(slots), 30, what="the endpoint opened without a batch")
    finally:
        slots.close()
