"""The worker's load counts the slots direct calls hold, so every coordinator sees them taken."""

from __future__ import annotations

from pyrocluster.slots.gate import Gate, Ticket


def test_a_slot_running_a_direct_call_counts_as_running_and_is_not_offered():
    gate = Gate(2)
    gate.direct = lambda: ([41001], 0, 1)  # one slot runs a direct call, the other is lent and free
    assert gate.load() == {"slots": 2, "running": 1, "queued": 0, "direct": [41001]}
    gate.direct = lambda: ([], 0, 2)
    assert gate.load() == {"slots": 2, "running": 2, "queued": 0}


def test_a_batch_admitted_while_a_direct_call_holds_its_slot_counts_as_queued():
    gate = Gate(1)
    ticket = Ticket(gate, "A", 0, 1)
    assert gate.enter(ticket)
    gate.direct = lambda: ([], 0, 1)  # the batch waits for the direct call's slot
    assert gate.load() == {"slots": 1, "running": 1, "queued": 1}
    gate.direct = lambda: ([], 1, 0)  # the slot is the batch's
    assert gate.load() == {"slots": 1, "running": 1, "queued": 0}
    gate.leave(ticket)
    gate.direct = lambda: ([41001], 0, 0)
    assert gate.load() == {"slots": 1, "running": 0, "queued": 0, "direct": [41001]}


def test_thread_slots_count_batches():
    gate = Gate(2)
    assert gate.enter(Ticket(gate, "A", 0, 1))
    assert gate.load() == {"slots": 2, "running": 1, "queued": 0}
