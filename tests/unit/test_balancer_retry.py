"""Pure dispatch policy: worker choice, batch sizing, attempts and backoff."""

from __future__ import annotations

from dataclasses import dataclass

from pyrocluster.coordinator.balancer import (
    CHEAP_ENOUGH,
    CHEAP_IN_FLIGHT,
    MAX_BATCH,
    BatchSizer,
    CallCost,
    choose,
    concurrent_size,
    cost_key,
    first_look,
    hold,
    most_in_flight,
    share,
)
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


def test_choose_breaks_ties_round_robin_from_turn():
    cands = [Fake("a", 2), Fake("b", 2), Fake("c", 2)]
    assert [choose(cands, "compute", 0.0, turn).name for turn in range(4)] == ["a", "b", "c", "a"]
    # The most free slots still win whatever the turn.
    cands = [Fake("a", 1), Fake("b", 3), Fake("c", 1)]
    assert {choose(cands, "compute", 0.0, turn).name for turn in range(3)} == {"b"}


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


def test_calls_run_at_once_on_a_worker_go_together_up_to_a_quarter_of_its_slots():
    assert concurrent_size(10, 16) == 4  # not split over 16 free slots: 1 call per round trip
    assert concurrent_size(3, 16) == 3
    assert concurrent_size(1, 16) == 1
    assert concurrent_size(10, 2) == 1  # a small worker: one at a time
    assert concurrent_size(10, 16, limit=1) == 1  # batching turned off


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


def learnt(per_call_s: float, rounds: int = 12) -> CallCost:
    """A service cost after ``rounds`` batches at ``per_call_s`` a call."""
    cost = CallCost()
    for _ in range(rounds):
        cost.observe(cost.size, cost.size * per_call_s)
    return cost


def test_call_cost_learns_from_every_worker_and_tells_cheap_calls():
    assert not CallCost().cheap  # unknown: not cheap
    cheap = learnt(1e-6)
    assert cheap.cheap and cheap.size == MAX_BATCH
    slow = learnt(0.05)
    assert not slow.cheap and slow.size == 1


def test_cheap_calls_reach_full_batches_in_three_replies_others_grow_by_four():
    cheap, sizes = CallCost(), []
    for _ in range(4):
        cheap.observe(cheap.size, cheap.size * 1e-6)  # 1 us per call: cheap
        sizes.append(cheap.size)
    assert sizes == [16, 256, MAX_BATCH, MAX_BATCH]
    costly = CallCost()
    costly.observe(1, 1e-3)  # 1 ms per call: not cheap, however quick a batch looked
    assert costly.size == 4


def test_a_worker_new_to_us_starts_at_the_batch_size_others_reached():
    cost = learnt(1e-6)
    fresh = BatchSizer()
    assert fresh.next_size(queued=5000, free_slots_total=2, cost=cost) == MAX_BATCH
    assert BatchSizer().next_size(queued=5000, free_slots_total=2) == 1  # without the shared cost


def test_cheap_calls_go_in_full_batches_not_split_over_every_free_slot():
    cost = learnt(1e-6)
    sizer = BatchSizer(size=MAX_BATCH, per_call_s=1e-6)
    assert sizer.next_size(queued=1024, free_slots_total=128, cost=cost, in_flight=0) == 1024
    # Costly calls still spread over every free slot (every core used).
    slow = BatchSizer(size=4, per_call_s=0.05)
    assert slow.next_size(queued=100, free_slots_total=128, cost=learnt(0.05), in_flight=100) == 1


def test_cheap_calls_wait_for_a_reply_while_enough_batches_are_out():
    cost = learnt(1e-6)
    sizer = BatchSizer(per_call_s=1e-3)  # its own round trips looked slow: the shared cost decides
    assert sizer.next_size(queued=1, free_slots_total=64, cost=cost, in_flight=0) == 1  # nothing out: now
    assert sizer.next_size(queued=3, free_slots_total=64, cost=cost, in_flight=CHEAP_IN_FLIGHT - 1) == 3
    assert sizer.next_size(queued=3, free_slots_total=64, cost=cost, in_flight=CHEAP_IN_FLIGHT) == 0
    # A full batch goes whatever is out.
    full = sizer.next_size(queued=5000, free_slots_total=64, cost=cost, in_flight=CHEAP_IN_FLIGHT)
    assert full == MAX_BATCH


def test_the_last_partial_batch_of_cheap_calls_does_not_wait_behind_full_ones():
    cost = learnt(1e-6)
    sizer = BatchSizer(size=MAX_BATCH, per_call_s=1e-6)
    # A map's last 1,565 calls go to a free slot while two full batches are out ...
    assert not hold(cost, queued=1565, in_flight=CHEAP_IN_FLIGHT)
    assert sizer.next_size(queued=1565, free_slots_total=0, cost=cost, in_flight=CHEAP_IN_FLIGHT) == 1565
    assert sizer.next_size(queued=CHEAP_ENOUGH, free_slots_total=0, cost=cost, in_flight=2) == CHEAP_ENOUGH
    # ... a trickle under CHEAP_ENOUGH still rides along in the next batch.
    assert hold(cost, queued=CHEAP_ENOUGH - 1, in_flight=CHEAP_IN_FLIGHT)
    assert sizer.next_size(queued=CHEAP_ENOUGH - 1, free_slots_total=64, cost=cost, in_flight=2) == 0


def test_cost_is_kept_per_task_and_only_cheap_calls_are_held():
    add, sleep = ("compute", frozenset(), "add", 0), ("compute", frozenset({"gpu"}), "sleep", 5)
    assert cost_key(add) == ("compute", "add") != cost_key(sleep)
    assert hold(learnt(1e-6), queued=10, in_flight=CHEAP_IN_FLIGHT)
    assert not hold(learnt(1e-6), queued=10, in_flight=CHEAP_IN_FLIGHT - 1)
    assert not hold(learnt(0.05), queued=10, in_flight=100)  # long calls never wait for a reply
    assert not hold(CallCost(), queued=10, in_flight=100)  # nor calls of unknown cost


def test_a_long_queue_of_cheap_calls_keeps_no_more_batches_out_than_keep_the_coordinator_busy():
    tiny, cheapish = learnt(1e-6), learnt(150e-6)
    assert most_in_flight(tiny) == CHEAP_IN_FLIGHT + 1
    assert most_in_flight(cheapish) == CHEAP_IN_FLIGHT + 30  # its workers are slower than we are
    sizer = BatchSizer(size=MAX_BATCH, per_call_s=1e-6)
    for in_flight in range(CHEAP_IN_FLIGHT, most_in_flight(tiny)):  # a full queue goes ...
        assert not hold(tiny, queued=20_000, in_flight=in_flight)
        size = sizer.next_size(queued=20_000, free_slots_total=64, cost=tiny, in_flight=in_flight)
        assert size == MAX_BATCH
    out = most_in_flight(tiny)  # ... until enough batches are out, however many workers are free
    assert hold(tiny, queued=20_000, in_flight=out)
    assert sizer.next_size(queued=20_000, free_slots_total=64, cost=tiny, in_flight=out) == 0
    assert not hold(cheapish, queued=20_000, in_flight=out)
    assert not hold(learnt(0.05), queued=20_000, in_flight=1000)  # long calls: every free slot
    assert not hold(CallCost(), queued=20_000, in_flight=1000)  # calls of unknown cost too


def test_cheap_calls_look_for_a_worker_from_the_coordinators_own_place_others_in_turn():
    home, workers = 7, [Fake(f"w{i}", 1) for i in range(16)]
    for turn in range(20):  # cheap calls: the same first free worker from home, whatever the turn
        assert first_look(learnt(1e-6), turn, home) == home
        assert choose(workers, "compute", 0.0, first_look(learnt(1e-6), turn, home)) is workers[home]
        # calls that take real time, or of unknown cost: equally free workers take turns
        assert first_look(learnt(0.05), turn, home) == turn
        assert first_look(CallCost(), turn, home) == turn == first_look(None, turn, home)
    workers[home].free = 0  # it holds a batch: the next one from home
    assert choose(workers, "compute", 0.0, first_look(learnt(1e-6), 3, home)) is workers[home + 1]


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
