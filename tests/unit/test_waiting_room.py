"""Taking one waiting call out of the room (``WaitingRoom.take_out``): only from a short queue,
never past a call of a higher priority, and the room's books kept."""

from __future__ import annotations

from pyrocluster.coordinator.calls import Call
from pyrocluster.coordinator.queues import WaitingRoom


def call(priority: int = 0, task: str = "add") -> Call:
    return Call("compute", task, [1, 2], {}, frozenset(), 10.0, 2, False, priority=priority)


def test_a_call_of_a_short_queue_is_taken_out_and_an_emptied_queue_forgotten() -> None:
    room, a, b = WaitingRoom(), call(), call()
    room.add_all([a, b], 0.0)
    assert room.take_out(b, most=2)
    assert list(room.calls()) == [a]
    assert room.take_out(a, most=2) and room.empty() and room.requirements() == []
    assert not room.take_out(a, most=2), "not waiting any more"


def test_a_call_of_a_longer_queue_stays_in_line() -> None:
    room = WaitingRoom()
    calls = [call() for _ in range(3)]
    room.add_all(calls, 0.0)
    assert not room.take_out(calls[0], most=2)
    assert list(room.calls()) == calls


def test_a_call_is_not_taken_past_a_waiting_call_of_a_higher_priority() -> None:
    room, low, high, other = WaitingRoom(), call(), call(priority=5, task="echo"), call(task="echo")
    room.add_all([low, other], 0.0)
    room.add(high, 0.0)
    assert not room.take_out(low, most=16)
    assert room.take_out(high, most=16)
    assert room.take_out(low, most=16), "nothing of a higher priority waits any more"
    assert list(room.calls()) == [other]
