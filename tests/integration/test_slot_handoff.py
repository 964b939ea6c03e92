"""Big values through a real slot process: the argument handed over as shared memory, the result
packed straight into the slot's log, and a batch-mate killed by its timeout costing neither the
finished outcomes nor any memory left behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pyrocluster import codec, protocol
from pyrocluster.slots.batch import Budget
from pyrocluster.slots.gate import Gate, Ticket
from pyrocluster.slots.process import ProcessSlots

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20


def handed_off_files() -> list[str]:
    """This process's open memfds (the slot's log among them) and what /dev/shm holds of ours
    (other programs' semaphores come and go there)."""
    fds = Path("/proc/self/fd")
    links = []
    for fd in fds.iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:
            continue
    shm = [name for name in os.listdir("/dev/shm") if "pyrocluster" in name]
    return sorted(link for link in links if link.startswith("/memfd:")) + shm


def run(slots: ProcessSlots, gate: Gate, calls: list[list]) -> list[list]:
    ticket = Ticket(gate, "test", 0, len(calls))
    assert gate.enter(ticket)
    return slots.run(calls, Budget(MIB, 256 * MIB), ticket)


def test_a_big_argument_and_result_survive_a_batch_mate_killed_by_its_timeout_and_nothing_is_left():
    value = np.random.default_rng(2).random(4 * 131072)  # 4 MiB of float64
    payload = codec.pack([[value], {}])
    slots, gate = ProcessSlots(1, [], 257 * MIB), Gate(1)
    try:
        assert run(slots, gate, [["echo", codec.pack([[1], {}]), 30.0]])[0][0] == protocol.OK
        before = handed_off_files()
        calls = [
            ["echo", payload, 30.0],
            ["sleep", codec.pack([[30], {}]), 0.5],  # its slot's timer ends the process
            ["echo", payload, 30.0],
        ]
        outcomes = run(slots, gate, calls)
        assert [o[0] for o in outcomes] == [protocol.OK, protocol.TIMEOUT, protocol.NOT_RUN]
        back = codec.unpack(outcomes[0][1])
        assert back.dtype == value.dtype and np.array_equal(back, value), "the finished echo kept its value"
        again = run(slots, gate, [["echo", payload, 30.0]])
        assert again[0][0] == protocol.OK, "the replaced slot takes big values"
        assert np.array_equal(codec.unpack(again[0][1]), value)
        assert handed_off_files() == before, "a handed-off payload or a killed slot's log was left open"
    finally:
        slots.close()
