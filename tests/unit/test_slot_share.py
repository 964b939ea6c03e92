"""What a worker shares with a slot process, both sides driven from this process: the outcome log,
the call in progress, and cancel flags that skip a call or kill only for the one running."""

from __future__ import annotations

import multiprocessing

import msgpack

from pyrocluster import codec, protocol
from pyrocluster.slots.batch import cancelled
from pyrocluster.slots.share import LOGGED, SlotShare


def share() -> SlotShare:
    s = SlotShare(multiprocessing.get_context("spawn"), max_calls=10, log_bytes=1 << 16)
    s.reset()
    s.restart()
    return s


def ok(value: object) -> list[object]:
    return [protocol.OK, codec.pack(value), 1.0]


def test_the_log_holds_each_finished_outcome_and_tells_the_call_in_progress():
    s = share()
    assert s.running() == -1 and s.finished() == []
    assert s.begin(0, 1.0)
    assert s.running() == 0 and s.started_at() == 1.0
    s.record(ok("a"))
    assert s.running() == -1, "finished: no call in progress until the next starts"
    assert s.begin(1, 2.0)
    s.record(ok({1: [2]}))
    assert s.begin(2, 3.0) and s.running() == 2
    assert s.finished() == [ok("a"), ok({1: [2]})]
    s.progress[LOGGED] = 1  # killed between an outcome's bytes and its count: it is not counted
    assert s.finished() == [ok("a")] and s.running() == -1
    s.close()


def test_a_flagged_call_is_skipped_and_a_cancel_kills_only_for_the_call_running():
    s = share()
    kills: list[int] = []
    s.flag({3})
    assert s.begin(0, 1.0)
    s.cancel({2}, lambda: kills.append(2))
    assert kills == [], "call 2 has not started: it is skipped, nothing is killed"
    s.record(ok(0))
    assert s.begin(1, 2.0)
    s.record(ok(1))
    assert not s.begin(2, 3.0)
    s.record(cancelled())
    assert not s.begin(3, 3.0)
    s.record(cancelled())
    assert s.begin(4, 4.0)
    s.cancel({4}, lambda: kills.append(4))
    assert kills == [4]
    assert not s.kill_if_running(1, lambda: kills.append(1)) and s.kill_if_running(4, lambda: kills.append(5))
    assert kills == [4, 5]
    s.recycle({2, 3, 4})
    s.reset()
    s.restart()
    assert all(s.begin(i, 5.0) for i in range(5)), "flags of the last batch are cleared"
    s.close()


def test_a_big_value_packed_into_the_place_offered_is_logged_where_it_lies():
    import numpy as np

    s = SlotShare(multiprocessing.get_context("spawn"), max_calls=10, log_bytes=8 << 20)
    s.reset()
    s.restart()
    small, big = np.arange(10.0), np.arange(3 * 131072.0)  # the big one 3 MiB
    assert s.place(4 << 20) is not None and s.place(64 << 20) is None, "room only for what fits"
    packed = codec.pack(big, s.place)
    assert isinstance(packed, memoryview), "packed straight into the log"
    s.begin(0, 1.0)
    s.record([protocol.OK, packed, 1.0])
    s.begin(1, 2.0)
    s.record(ok(small.tolist()))
    s.begin(2, 3.0)
    s.record([protocol.OK, codec.pack(big), 1.0])  # packed elsewhere: copied in below the first
    outcomes = s.finished()
    assert all(np.array_equal(codec.unpack(outcomes[i][1]), big) for i in (0, 2))
    assert outcomes[1] == ok(small.tolist())
    packed.release()  # the slot process's side never closes its map; this test plays both sides
    s.close()


def test_a_slot_runs_a_direct_call_only_while_lent_and_never_beside_a_batch():
    s = share()
    assert not s.claim(["coord", "1", "add"], 5.0, 100.0), "a slot not lent runs no direct call"
    s.lend(True)
    assert s.claim(["coord", "1", "add"], 5.0, 100.0)
    assert s.direct_call() == ["coord", "1", "add"] and s.deadline() == 105.0
    assert not s.claim(["other", "2", "add"], 5.0, 100.0), "one direct call at a time"
    assert not s.hold(), "a batch does not take a slot running a direct call"
    told: list[bool] = []
    s.unclaim(b"\x90", lambda: told.append(True))
    assert told, "the worker wanted the slot back: it is told"
    assert s.direct_call() is None and s.hold(), "back to the worker, not lent again"
    assert not s.claim(["coord", "3", "add"], 5.0, 100.0)
    s.close()


def test_direct_calls_are_killed_only_for_their_own_cancel_or_past_their_deadline():
    s = share()
    s.lend(True)
    assert s.claim(["coord", "7", "hog"], 1.0, 100.0)
    killed: list[str] = []
    assert not s.kill_direct("other", {"7"}, lambda: killed.append("cancel"))
    assert not s.kill_direct("coord", {"8"}, lambda: killed.append("cancel"))
    assert not s.kill_overdue(101.4, 0.5, lambda: killed.append("late"))
    assert killed == []
    assert s.kill_overdue(101.6, 0.5, lambda: killed.append("late"))
    assert s.kill_direct("coord", {"7"}, lambda: killed.append("cancel"))
    assert killed == ["late", "cancel"]
    s.close()


def test_the_records_of_ended_direct_calls_are_read_once_in_bulk():
    s = share()
    told: list[bool] = []
    records = [["coord", "add", protocol.OK, 0.01 * i] for i in range(3)]
    for record in records:
        s.lend(True)
        assert s.claim(["coord", str(record[3]), "add"], 5.0, 0.0)
        s.unclaim(msgpack.packb(record), lambda: told.append(True))
    assert told == [], "a few records wake nobody"
    assert s.take_ended() == records
    assert s.take_ended() == []
    s.close()


def test_revocations_reach_the_slot_once_per_version():
    s = share()
    assert s.write_revocations(msgpack.packb({"t-sub": 5}), 1.0)
    version, revoked = s.revocations(0.0)
    assert version == 1.0 and revoked == {"t-sub": 5}
    assert s.revocations(version) == (1.0, None)
    s.close()


def test_a_cancel_of_a_direct_batch_skips_its_calls_to_come_and_kills_only_for_the_one_running():
    s = share()
    s.lend(True)
    assert s.claim(["coord", "a", "add", ["a", "b", "c", "d"]], 5.0, 100.0)
    assert s.direct_call() == ["coord", "a", "add", ["a", "b", "c", "d"]]
    s.record(ok(1))  # a done; b is next
    assert s.begin(1, 101.0)
    killed: list[str] = []
    assert s.kill_direct("other", {"c"}, lambda: killed.append("x")) == 0
    assert s.kill_direct("coord", {"c", "d", "zz"}, lambda: killed.append("x")) == 2
    assert killed == [], "the call in progress is not among them: nothing is killed"
    s.record(ok(2))
    assert not s.begin(2, 102.0) and not s.begin(3, 102.0), "c and d are skipped when their turn comes"
    assert s.flagged(4) == {2, 3}
    assert s.kill_direct("coord", {"a"}, lambda: killed.append("x")) == 1 and killed == [], "a ended"
    s.unclaim(b"\x90", lambda: None, calls=4)
    assert s.flagged(4) == set(), "the flags go with the batch: the slot's next calls run"
    s.close()


def test_a_direct_batch_is_overdue_by_the_start_of_the_call_in_progress():
    s = share()
    s.lend(True)
    assert s.claim(["coord", "a", "hog", ["a", "b"]], 1.0, 100.0)
    killed: list[str] = []
    s.record(ok(1))
    assert not s.kill_overdue(110.0, 0.5, lambda: killed.append("late")), "between calls none runs"
    assert s.begin(1, 109.0) and s.deadline() == 110.0
    assert not s.kill_overdue(110.4, 0.5, lambda: killed.append("late"))
    assert s.kill_overdue(110.6, 0.5, lambda: killed.append("late")) and killed == ["late"]
    s.close()
