"""A finished compute call's results record: its fields, and its run time to the microsecond."""

from __future__ import annotations

from concurrent.futures import CancelledError

import pytest

from pyrocluster.coordinator.calls import Call
from pyrocluster.errors import TaskFailed
from pyrocluster.jobs.items import TaskItem
from pyrocluster.jobs.recordjson import encode_record
from pyrocluster.jobs.records import CANCELLED_REASON, compute_record

ITEM = TaskItem("m-3", "add", [3, 3], {}, (), 60.0, 3, False)


class Waiter:
    def settled(self, calls: list[Call]) -> None:  # pragma: no cover - nothing ends here
        pass


def settled(elapsed_ms: float, value: object = 6, error: BaseException | None = None) -> Call:
    call = Call("compute", "add", [3, 3], {}, frozenset(), 60.0, 3, False, Waiter(), ITEM)
    call.value, call.error, call.worker, call.attempts, call.elapsed_ms = value, error, "w-1", 2, elapsed_ms
    return call


@pytest.mark.parametrize(
    ("elapsed_ms", "written"),
    [(0.0, 0.0), (0.0004, 0.0), (0.0016, 0.002), (1.23449, 1.234), (12.5, 12.5), (987654.3216, 987654.322)],
)
def test_an_ok_record_holds_its_call_and_its_run_time_to_the_microsecond(
    elapsed_ms: float, written: float
) -> None:
    record = compute_record(ITEM, settled(elapsed_ms))
    assert record == {
        "id": "m-3",
        "kind": "compute",
        "call": "add",
        "args": [3, 3],
        "kwargs": {},
        "status": "ok",
        "result": 6,
        "worker": "w-1",
        "attempts": 2,
        "elapsed_ms": written,
    }
    assert encode_record(record).endswith(b'"elapsed_ms":' + repr(written).encode() + b"}\n")


def test_failed_and_cancelled_records_round_their_run_time_alike() -> None:
    failed = compute_record(ITEM, settled(3.14159, None, TaskFailed("ValueError", "no", "tb")))
    assert failed["status"] == "failed" and failed["error"]["type"] == "ValueError"
    assert failed["elapsed_ms"] == 3.142 and "result" not in failed
    cancelled = compute_record(ITEM, settled(0.0004, None, CancelledError()))
    assert (cancelled["status"], cancelled["reason"], cancelled["elapsed_ms"]) == (
        "cancelled",
        CANCELLED_REASON,
        0.0,
    )
