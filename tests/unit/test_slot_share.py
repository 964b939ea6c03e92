"""What a worker shares with a slot process, both sides driven from this process: the outcome log,
the call in progress, and cancel flags that skip a call or kill only for the one running."""

from __future__ import annotations

import multiprocessing

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
