"""What a scheduler writes to disk: ``runs/{name}/ticks.jsonl`` lines and its ``--state`` file."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from pyrocluster.scheduler.state import parse_iso


def append_tick(path: Path, line: dict[str, Any]) -> None:
    """Append one decision as one JSON line, in one ``write`` on an ``O_APPEND`` file.

    Schedulers sharing a directory append to the same file; a single small append is atomic,
    so their lines never interleave.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(line) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def tick_line(
    schedule: str, tick: str, decision: str, scheduler: str, run_status: str | None, decided_at: str
) -> dict[str, Any]:
    """A ``ticks.jsonl`` record (``decided_at``: when the decision was taken, UTC)."""
    return {
        "schedule": schedule,
        "tick": tick,
        "decision": decision,
        "scheduler": scheduler,
        "run_status": run_status,
        "decided_at": decided_at,
    }


class StateFile:
    """The newest decided tick of each schedule on local disk, so a lone restart does not re-decide.

    The name server holds the same watermark; this copy matters when the name server lost it
    (memory storage restarted). Several schedulers may share one file: writes merge, newest wins.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, dict[str, str]]:
        """``{schedule: {"tick", "fire", "status"}}``; empty when the file is missing or unreadable,
        and without an entry whose ``tick`` is not an ISO 8601 time (the name server's copy decides)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        schedules = data.get("schedules") if isinstance(data, dict) else None
        if not isinstance(schedules, dict):
            return {}
        return {str(k): v for k, v in schedules.items() if isinstance(v, dict) and _instant(v.get("tick"))}

    def check(self) -> None:
        """OSError when the file could not be written (its folder, its lock, a file beside it): a
        scheduler that finds out at its first tick has claimed that tick and cannot record it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(self.path.suffix + ".lock"), "a"):
            pass
        probe = self.path.with_suffix(self.path.suffix + f".{os.getpid()}.tmp")
        probe.write_text("", encoding="utf-8")
        probe.unlink()

    def save(self, marks: dict[str, dict[str, str]]) -> None:
        """Merge ``marks`` into the file (per schedule, the later ``tick`` wins), atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(self.path.suffix + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            merged = self.load()
            for name, mark in marks.items():
                if mark.get("tick", "") >= merged.get(name, {}).get("tick", ""):
                    merged[name] = mark
            tmp = self.path.with_suffix(self.path.suffix + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"schedules": merged}, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)


def _instant(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        parse_iso(text)
    except ValueError:
        return False
    return True
