"""Pure dispatch policy: worker choice, batch sizing, attempts and backoff."""

from __future__ import annotations

from dataclasses import dataclass

from pyrocluster.coordinator.balancer import MAX_BATCH, BatchSizer, choose, share
from pyrocluster.coordinator.retry import BACKOFF_MAX_S, Quarantine, attempts_left


@dataclass
class Fake:
    name: str
    free: int
    own_room: int | None = None

    def free_slots(self, service: str) -> int:
        return self.free

    def room(self, service: str, now: float) -> int:
        return self.free if self.own_room is None else self.own_room


def test_choose_takes_most_free_slots_and_none_when_full():
    a, b, c = Fake("a", 1), Fake("b", 3), Fake("c", 2)
    assert choose([a, b, c], "compute", 0.0) is b
    assert choose([Fake("x", 0), Fake("y", 0)], "compute", 0.0) is None
    assert choose([], "compute", 0.0) is None


def test_choose_breaks_ties_by_name():
    assert choose([Fake("b", 2), Fake("a", 2)], "compute", 0.0).name == "a"


def test_choose_counts_other_coordinators_work_but_may_queue_behind_it():
    # "b" has room for us (we hold nothing there) but others fill it: "a" is freer.
    a, b = Fake("a", 1, own_room=1), Fake("b", -1, own_room=2)
    assert choose([a, b], "compute", 0.0) is a
    # Only "b" left: we may still queue there (its admission queue orders the work).
    assert choose([b], "compute", 0.0) is b


def test_share_spreads_over_free_slots():
    assert share(10, 4) == 3
    assert share(1, 4) == 1
    assert share(5, 0) == 5


def test_batch_sizer_grows_for_fast_calls_and_shrinks_for_slow_ones():
    sizer = BatchSizer()
    assert sizer.size == 1
    for _ in range(10):
        sizer.observe(sizer.size, sizer.size * 1e-6)  # 1 us per call
    assert sizer.size == MAX_BATCH
    for _ in range(10):
        sizer.observe(sizer.size, sizer.size * 0.5)  # 0.5 s per call
    assert sizer.size == 1


def test_batch_sizer_never_exceeds_queue_or_fair_share():
    sizer = BatchSizer(size=1000)
    assert sizer.next_size(queued=10, free_slots_total=1) == 10
    assert sizer.next_size(queued=100, free_slots_total=4) == 25
    assert sizer.next_size(queued=0, free_slots_total=4) == 1


def test_attempts_left_counts_further_attempts():
    assert attempts_left(1, 3) and attempts_left(3, 3)
    assert not attempts_left(4, 3)
    assert not attempts_left(1, 0)


def test_quarantine_backs_off_exponentially_with_a_cap():
    q = Quarantine()
    delays = []
    now = 100.0
    for _ in range(8):
        q.set_aside(now)
        delays.append(q.next_probe_at - now)
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == BACKOFF_MAX_S
    assert not q.due(now + 1) and q.due(now + BACKOFF_MAX_S)
    q.clear()
    assert q.due(now) and q.failures == 0


def test_batch_sizer_limit_of_one_turns_batching_off():
    sizer = BatchSizer(limit=1)
    for _ in range(5):
        sizer.observe(sizer.size, sizer.size * 1e-6)
    assert sizer.size == 1
    assert sizer.next_size(queued=1000, free_slots_total=1) == 1
