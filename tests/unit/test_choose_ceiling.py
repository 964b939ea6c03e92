"""Choosing a worker costs O(1), not O(workers), while most workers are idle, and chooses the same."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pyrocluster.coordinator.balancer import choose, most_slots


@dataclass
class Counted:
    """A worker with ``capacity`` slots, ``free`` of them free; counts how often it was looked at."""

    name: str
    capacity: int
    free: int
    looked: int = 0

    def slots(self, service: str) -> int:
        return self.capacity

    def free_slots(self, service: str) -> int:
        return self.free

    def room(self, service: str, now: float) -> int:
        self.looked += 1
        return self.free

    def free_for(self, ask: object) -> float:
        return 0.0


def test_the_scan_stops_at_the_first_wholly_free_worker_of_the_largest_size():
    workers = [Counted(f"w{i}", 1, 1) for i in range(128)]
    workers[5].free = workers[6].free = 0  # two hold a batch
    for turn in range(5, 9):
        for w in workers:
            w.looked = 0
        top = most_slots(workers, "compute")
        assert top == 1
        chosen = choose(workers, "compute", 0.0, turn, None, top)
        assert chosen is workers[max(turn, 7)]  # ties still go round robin from the turn
        assert sum(w.looked for w in workers) <= 3
    # Without a ceiling every worker is looked at.
    for w in workers:
        w.looked = 0
    choose(workers, "compute", 0.0, 0)
    assert sum(w.looked for w in workers) == 128


def test_a_bigger_worker_elsewhere_is_still_found():
    workers = [Counted(f"w{i}", 1, 1) for i in range(10)] + [Counted("big", 4, 4)]
    assert choose(workers, "compute", 0.0, 0, None, most_slots(workers, "compute")).name == "big"


def test_same_choice_as_the_full_scan():
    rng = random.Random(7)
    for _ in range(500):
        workers = []
        for i in range(rng.randint(0, 12)):
            capacity = rng.randint(1, 4)
            workers.append(Counted(f"w{i}", capacity, rng.randint(-1, capacity)))
        turn = rng.randint(0, 20)
        full = choose(workers, "compute", 0.0, turn)
        assert choose(workers, "compute", 0.0, turn, None, most_slots(workers, "compute")) is full
    assert most_slots([], "compute") == 0
