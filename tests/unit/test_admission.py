"""The admission order of waiting batches: fair by calls started (pure: no threads, no sockets;
the only clock is the count of calls started)."""

from __future__ import annotations

import random
from collections import Counter

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
        order.push("A", priority, 1, item)
    assert drain(order) == ["a2", "a4", "a1", "a3"]


def test_senders_of_one_call_batches_take_turns():
    order: AdmissionOrder[str] = AdmissionOrder()
    for i in range(3):
        order.push("A", 0, 1, f"a{i}")
    for i in range(3):
        order.push("B", 0, 1, f"b{i}")
    order.push("C", 0, 1, "c0")
    assert drain(order) == ["a0", "b0", "c0", "a1", "b1", "a2", "b2"]


def test_priority_beats_fairness_across_senders():
    order: AdmissionOrder[str] = AdmissionOrder()
    for i in range(3):
        order.push("bulk", 0, 1, f"bulk{i}")
    order.push("urgent", 10, 1, "urgent0")
    assert order.pop() == "urgent0"
    assert drain(order) == ["bulk0", "bulk1", "bulk2"]


def test_a_big_batch_is_charged_its_calls_not_one_turn():
    order: AdmissionOrder[str] = AdmissionOrder()
    order.push("map", 0, 2048, "big0")
    order.push("map", 0, 2048, "big1")
    for i in range(3000):
        order.push("single", 0, 1, f"s{i}")
    started = drain(order)
    # big0 first (oldest); then 2,048 single calls catch up before big1 starts
    assert started[0] == "big0" and started.index("big1") == 1 + 2048


def test_steady_refills_share_by_calls_whatever_the_batch_sizes():
    """Each sender keeps two batches waiting and refills the moment one starts."""
    sizes = {"A": 50, "B": 1, "C": 7}
    order: AdmissionOrder[tuple[str, int]] = AdmissionOrder()
    for sender, size in sizes.items():
        for _ in range(2):
            order.push(sender, 0, size, (sender, size))
    served: Counter[str] = Counter()
    for _ in range(20_000):
        item = order.pop()
        assert item is not None
        served[item[0]] += item[1]
        order.push(item[0], 0, item[1], item)
    low, high = min(served.values()), max(served.values())
    assert high - low <= max(sizes.values()), served


def test_a_sender_away_earns_no_credit_for_the_time_it_had_nothing_waiting():
    order: AdmissionOrder[str] = AdmissionOrder()
    for i in range(100):  # A runs alone for 100 calls
        order.push("A", 0, 1, f"a{i}")
        assert order.pop() == f"a{i}"
    for i in range(10):
        order.push("A", 0, 1, f"a{100 + i}")
    for i in range(10):
        order.push("B", 0, 1, f"b{i}")
    started = drain(order)
    # B does not get 100 calls in a row: the two alternate from B's arrival on
    assert [item[0] for item in started[:10]] in (list("ab" * 5), list("ba" * 5))


def test_a_sender_back_soon_after_a_big_batch_stays_charged_for_it():
    order: AdmissionOrder[str] = AdmissionOrder()
    order.push("A", 0, 100, "a-big")
    assert order.pop() == "a-big"  # ran at once, A has nothing waiting now
    for i in range(5):
        order.push("B", 0, 1, f"b{i}")
    order.push("A", 0, 1, "a-small")
    assert drain(order) == ["b0", "b1", "b2", "b3", "b4", "a-small"]


def test_a_sender_served_first_goes_after_one_that_arrives_next():
    order: AdmissionOrder[str] = AdmissionOrder()
    order.push("A", 0, 1, "a0")
    order.push("A", 0, 1, "a1")
    assert order.pop() == "a0"
    order.push("B", 0, 1, "b0")  # arrives after A was served: B's turn before A's second
    assert drain(order) == ["b0", "a1"]


def test_calls_served_at_a_high_priority_count_against_the_sender_at_a_lower_one():
    order: AdmissionOrder[str] = AdmissionOrder()
    order.push("A", 0, 1, "a-low")
    order.push("B", 0, 1, "b-low")
    order.push("A", 10, 1, "a-high")
    assert drain(order) == ["a-high", "b-low", "a-low"]


def test_remove_takes_one_waiting_item_out_by_identity_and_charges_nothing():
    order: AdmissionOrder[str] = AdmissionOrder()
    a, b = "x" * 3, "y" * 3
    order.push("A", 0, 500, a)
    order.push("B", 0, 1, b)
    assert order.remove(a) and not order.remove(a)
    assert len(order) == 1 and drain(order) == [b]
    order.push("A", 0, 1, "a")
    order.push("B", 0, 1, "b")
    assert order.pop() == "a"  # A was never charged for the removed 500


def test_the_state_stays_bounded_by_the_senders_of_the_last_moments():
    order: AdmissionOrder[int] = AdmissionOrder()
    rng = random.Random(7)
    for n in range(5000):  # a new sender every time, as after coordinator restarts
        order.push(f"coordinator-{n}", 0, rng.randint(1, 30), n)
        if rng.random() < 0.6 or len(order) > 20:
            order.pop()
    while order.pop() is not None:
        pass
    for i in range(100):  # one sender keeps the worker busy: everyone else is forgotten
        order.push("last", 0, 1, i)
        order.pop()
    assert list(order._started) == ["last"]


def test_starting_at_once_is_charged_as_waiting_and_then_starting():
    at_once: AdmissionOrder[str] = AdmissionOrder()
    queued: AdmissionOrder[str] = AdmissionOrder()
    for sender, size in (("A", 5), ("B", 1), ("A", 2), ("C", 9), ("B", 3)):
        at_once.start_now(sender, size)
        queued.push(sender, 0, size, sender)
        assert queued.pop() == sender
    for order in (at_once, queued):
        for sender in "CBA":
            order.push(sender, 0, 1, sender.lower())
    assert drain(at_once) == drain(queued) == ["a", "b", "c"]  # A 7, B 8, C 14 calls counted
