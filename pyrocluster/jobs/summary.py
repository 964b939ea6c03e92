"""Summarise a results file (``pyrocluster results``): counts by status, workers, and the failed tasks."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyrocluster.errors import ConfigError
from pyrocluster.jobs import runfile


@dataclass
class ResultsSummary:
    """What a results file says, last line per id winning."""

    path: str
    job: str | None = None
    finished: bool | None = None
    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    by_worker: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    elapsed_ms: float = 0.0
    torn_last_line: bool = False
    failed: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self, with_failures: bool = False) -> dict[str, Any]:
        """The ``--json`` object."""
        data: dict[str, Any] = {
            "file": self.path,
            "job": self.job,
            "finished": self.finished,
            "total": self.total,
            **{s: self.by_status.get(s, 0) for s in ("ok", "failed", "skipped", "cancelled")},
            "retried": self.retried,
            "kinds": dict(self.by_kind),
            "workers": dict(self.by_worker),
            "mean_ms": round(self.elapsed_ms / self.total, 3) if self.total else 0.0,
        }
        if with_failures:
            data["failures"] = self.failed
        return data


def summarise(path: Path) -> ResultsSummary:
    """Read a results file; ConfigError (exit 2) if it is missing or a line (but the last) is no record."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such results file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    records: dict[str, dict[str, Any]] = {}
    lines = text.splitlines()
    torn = False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise ValueError("not a record with a string id")
        except ValueError as exc:
            if number == len(lines) and not text.endswith("\n"):
                torn = True  # an interrupted write; --resume repairs it
                continue
            raise ConfigError(f"{path}:{number}: not a results record ({exc})") from None
        records.pop(record["id"], None)
        records[record["id"]] = record
    marker = runfile.read_marker(path)
    summary = ResultsSummary(
        str(path),
        job=marker.get("job") if marker else None,
        finished=bool(marker.get("finished")) if marker else None,
        torn_last_line=torn,
    )
    for record in records.values():
        status = str(record.get("status", "?"))
        summary.total += 1
        summary.by_status[status] += 1
        summary.by_kind[str(record.get("kind", "?"))] += 1
        if status == "ok" and record.get("worker"):
            summary.by_worker[str(record["worker"])] += 1
        if int(record.get("attempts") or 1) > 1:
            summary.retried += 1
        summary.elapsed_ms += float(record.get("elapsed_ms") or 0.0)
        if status == "failed":
            summary.failed.append(record)
    return summary
