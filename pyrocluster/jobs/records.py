"""The results-file records of a job's compute tasks: what each outcome is written as."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError
from typing import Any

from pyrocluster.coordinator.calls import Call
from pyrocluster.errors import error_record
from pyrocluster.jobs.graph import callback_id
from pyrocluster.jobs.items import TaskItem

TRACEBACK_CHARS = 4000
"""Characters of a traceback kept per recent failure (its end, where the error is)."""
CANCELLED_REASON = "the job was cancelled"
"""The ``reason`` of a ``cancelled`` record."""


def compute_record(item: TaskItem, call: Call) -> dict[str, Any]:
    """The results-file line of a finished compute call (``elapsed_ms`` to the microsecond)."""
    error = call.error
    if error is None:  # the common case as one literal: a dict built key by key costs twice as much
        return {
            "id": item.id,
            "kind": item.kind,
            "call": item.call,
            "args": item.args,
            "kwargs": item.kwargs,
            "status": "ok",
            "result": call.value,
            "worker": call.worker,
            "attempts": call.attempts,
            "elapsed_ms": round(call.elapsed_ms * 1000) / 1000,  # round(ms, 3) cost 3x: 0.3-0.6 us
        }
    record = _item_fields(item)
    if isinstance(error, CancelledError):
        record["status"] = "cancelled"
        record["reason"] = CANCELLED_REASON
    else:
        record["status"] = "failed"
        record["error"] = error_record(error)
    record["worker"] = call.worker
    record["attempts"] = call.attempts
    record["elapsed_ms"] = round(call.elapsed_ms * 1000) / 1000
    return record


def respelled(records: list[dict[str, Any]], spelled: dict[int, Any]) -> list[dict[str, Any]]:
    """Records whose arguments hold values read back from their ``.values/`` files (``--resume``)
    with each such value written as its file reference, as the run that made it wrote it, not
    whole: a big value passed on must not make a line of its size."""
    for record in records:
        record["args"] = _swapped(record["args"], spelled)
        record["kwargs"] = _swapped(record["kwargs"], spelled)
    return records


def _swapped(value: Any, spelled: dict[int, Any]) -> Any:
    reference = spelled.get(id(value))
    if reference is not None:
        return reference
    if isinstance(value, list):
        return [_swapped(v, spelled) for v in value]
    if isinstance(value, dict):
        return {k: _swapped(v, spelled) for k, v in value.items()}
    return value


def cancelled_record(item: TaskItem) -> dict[str, Any]:
    """The results-file line of a task that never got an outcome because the job was cancelled."""
    return {
        **_item_fields(item),
        "status": "cancelled",
        "reason": CANCELLED_REASON,
        "worker": None,
        "attempts": 0,
        "elapsed_ms": 0.0,
    }


def _item_fields(item: TaskItem) -> dict[str, Any]:
    """The first fields of every record: what was asked."""
    return {"id": item.id, "kind": item.kind, "call": item.call, "args": item.args, "kwargs": item.kwargs}


def failure_entry(record: dict[str, Any]) -> dict[str, Any]:
    """A failed record as the dashboard lists it: id, call, worker, attempts, type, message, traceback."""
    err = record.get("error") or {}
    return {
        "id": record["id"],
        "call": record.get("call") or record.get("url") or "",
        "worker": record.get("worker") or "",
        "attempts": record.get("attempts", 0),
        "type": str(err.get("type", record.get("status", ""))),
        "message": str(err.get("message", record.get("reason", "")))[:TRACEBACK_CHARS],
        "traceback": str(err.get("traceback", ""))[-TRACEBACK_CHARS:],
    }


def contradicted(
    callbacks: Iterable[str], statuses: Callable[[list[str]], dict[str, Any]], job_failed: bool | None
) -> list[str]:
    """The callback lines an earlier run wrote that the file's outcomes now contradict.

    ``<id>:on_success`` stands only while task ``<id>``'s line is ``ok``, ``<id>:on_failure``
    only while it is ``failed`` (a skipped or cancelled task fired neither); a callback of an id
    with no line is left alone. ``job:on_success`` goes when the job ended with failures
    (``job_failed``), ``job:on_failure`` when it ended without; None (it did not end): both stay.
    ``statuses`` gives the status of the latest line of each id it is asked about.
    """
    tasks: dict[str, str] = {}
    stale: list[str] = []
    for key in callbacks:
        unit, _, kind = key.rpartition(":")
        if unit == "job":
            if job_failed is not None and kind == ("on_success" if job_failed else "on_failure"):
                stale.append(key)
        else:
            tasks[key] = unit
    now = statuses(list(set(tasks.values())))
    stale += [key for key, unit in tasks.items() if unit in now and callback_id(unit, now[unit]) != key]
    return stale
