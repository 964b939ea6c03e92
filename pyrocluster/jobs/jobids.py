"""The results-file ids a job can write: tells its own results file from another job's.

``--resume`` asks this when the file's ``.run.json`` is missing: a line whose id this job never
writes (another job's task, a callback this job does not have) means the file is not this job's,
and resuming would keep that line for good (compaction keeps every id).
"""

from __future__ import annotations

from pyrocluster.jobs.items import callbacks_of
from pyrocluster.jobs.spec import RESERVED_ID_PREFIX, JobSpec

CALLBACK_KINDS = ("on_success", "on_failure")


def _item_index(k: str) -> bool:
    """Whether ``k`` is a map item's index as ids spell it (``0``, ``7``, never ``07``)."""
    return k.isascii() and k.isdigit() and (k == "0" or k[0] != "0")


class JobIds:
    """``key in JobIds(spec)``: whether the job writes a record with id ``key``.

    Its tasks' ids; a static map's ``ID-k`` for its items; a dynamic map's own id (a line for it
    before it expands) and any ``ID-k`` (its size is known only once it runs); ``<id>:on_success``
    / ``<id>:on_failure`` of those where the task has that callback, ``job:...`` where the job
    has it; ``crawl:<url>`` when the job crawls (its pages are found as it runs).
    """

    def __init__(self, spec: JobSpec) -> None:
        self._singles: set[str] = set()
        self._maps: dict[str, int | None] = {}
        """Map id -> its item count; None for a dynamic map."""
        self._callbacks: dict[str, set[str]] = {}
        for task in spec.tasks:
            if task.map is None:
                self._singles.add(task.id)
            elif task.dynamic:
                self._maps[task.id] = None
            elif task.id not in self._maps or task.map:  # an empty repeat of a map adds nothing
                self._maps[task.id] = len(task.map)  # type: ignore[arg-type]
            given = callbacks_of(task, spec.defaults)
            kinds = {kind for kind, callback in zip(CALLBACK_KINDS, given, strict=True) if callback}
            self._callbacks.setdefault(task.id, set()).update(kinds)
        self._job = {kind for kind in CALLBACK_KINDS if getattr(spec, kind) is not None}
        self._crawl = spec.crawl is not None

    def task_of(self, unit: str) -> str | None:
        """The task id a compute record's id belongs to, or None."""
        if unit in self._singles:
            return unit
        if unit in self._maps and self._maps[unit] is None:
            return unit
        base, _, k = unit.rpartition("-")
        if base not in self._maps or not _item_index(k):
            return None
        count = self._maps[base]
        return base if count is None or int(k) < count else None

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        if key.startswith(RESERVED_ID_PREFIX):
            return self._crawl
        unit, colon, kind = key.rpartition(":")
        if colon and kind in CALLBACK_KINDS:
            if unit == "job" and kind in self._job:
                return True
            task = self.task_of(unit)
            return task is not None and kind in self._callbacks.get(task, ())
        return self.task_of(key) is not None
