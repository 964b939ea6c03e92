"""The admission order of waiting batches (pure: no threads, no sockets, no clock)."""

from __future__ import annotations

from pyrocluster.slots.admission import AdmissionOrder


def drain(order: AdmissionOrder[str]) -> list[str]:
    out = []
    while (item := order.pop()) is not None:
        out.append(item)
    return out


def test_empty_order_pops_none():
    order: AdmissionOrder[str] = AdmissionOrder()
    assert order.pop() is None and len(order) == 0


def test_higher_priority_first_then_fifo_within_one_sender():
    order: AdmissionOrder[str] = AdmissionOrder()
    for item, priority in (("a1", 0), ("a2", 5), ("a3", 0), ("a4", 5)):
        order.push("A", priority, item)
    assert drain(order) == ["a2", "a4", "a1", "a3"]


def test_round_robin_between_senders_of_equal_priority():
    order: AdmissionOrder[str] = AdmissionOrder()
    for i in range(3):
        order.push("A", 0, f"a{i}")
    for i in range(3):
        order.push("B", 0, f"b{i}")
    order.push("C", 0, "c0")
    assert drain(order) == ["a0", "b0", "c0", "a1", "b1", "a2", "b2"]


def test_priority_beats_round_robin_across_senders():
    order: AdmissionOrder[str] = AdmissionOrder()
    for i in range(3):
        order.push("bulk", 0, f"bulk{i}")
    order.push("urgent", 10, "urgent0")
    assert order.pop() == "urgent0"
    assert drain(order) == ["bulk0", "bulk1", "bulk2"]


def test_a_sender_just_served_goes_after_one_that_arrives_next():
    order: AdmissionOrder[str] = AdmissionOrder()
    order.push("A", 0, "a0")
    order.push("A", 0, "a1")
    assert order.pop() == "a0"
    order.push("B", 0, "b0")  # arrives after A was served: B's turn before A's second
    assert drain(order) == ["b0", "a1"]


def test_a_newcomer_waits_behind_senders_that_waited_longer():
    order: AdmissionOrder[str] = AdmissionOrder()
    order.push("A", 0, "a0")
    order.push("B", 0, "b0")
    order.push("A", 0, "a1")
    assert order.pop() == "a0"
    order.push("C", 0, "c0")
    assert drain(order) == ["b0", "c0", "a1"]


def test_steady_alternation_while_both_keep_queues_full():
    order: AdmissionOrder[str] = AdmissionOrder()
    started = []
    for i in range(2):
        order.push("A", 0, f"a{i}")
        order.push("B", 0, f"b{i}")
    for i in range(2, 12):  # each start is followed by a refill from the same sender
        item = order.pop()
        assert item is not None
        started.append(item[0])
        order.push(item[0].upper(), 0, f"{item[0]}{i}")
    assert started == ["a", "b"] * 5


def test_remove_takes_one_waiting_item_out_by_identity():
    order: AdmissionOrder[str] = AdmissionOrder()
    a, b = "x" * 3, "y" * 3
    order.push("A", 0, a)
    order.push("B", 0, b)
    assert order.remove(a) and not order.remove(a)
    assert len(order) == 1 and drain(order) == [b]
