"""Finished jobs stay listed: their summary and last failures live in the name server for a while.

A job's process exits when the job ends, so the record must live where every ``status`` reader
looks: the name server. On its way out a job registers ``pyrocluster.finished.<id>`` (its status
entry as JSON in the metadata, with the wall-clock time it ended) and ``pyrocluster.failures.<id>``
(its last failures with tracebacks), both under a placeholder URI nothing listens on. Readers
ignore records older than ``KEEP_FINISHED_S``; jobs and the dashboard delete them (``prune``).
The failures live apart so that ``status`` lists summaries without fetching tracebacks.

Pruning lists every record with its metadata: 57 ms at 1,000 records (a job a second for 15
minutes), and a job's end waits for it. So a job's end (or the dashboard) prunes only when none
did in the last ``PRUNE_EVERY_S``, as a mark (``PRUNED_MARK``) says; otherwise it costs one look-up.
"""

from __future__ import annotations

import json
import time
from typing import Any

import Pyro5.errors

FINISHED_PREFIX = "pyrocluster.finished."
FAILURES_PREFIX = "pyrocluster.failures."
META_ENDED = "pyrocluster.ended:"
META_ENTRY = "pyrocluster.entry:"
META_FAILURES = "pyrocluster.failures:"
PLACEHOLDER_URI = "PYRO:pyrocluster.finished@127.0.0.1:9"
"""Registrations need a URI; these are records, not objects, so the URI points at the discard port."""
KEEP_FINISHED_S = 900.0
"""Seconds a finished job stays listed (the spec asks for at least 10 minutes)."""
PRUNE_EVERY_S = 60.0
"""A job's end prunes when no job's end did for this long (readers skip expired records anyway)."""
PRUNED_MARK = FINISHED_PREFIX + "~pruned"
"""When a job's end last pruned (``META_ENDED``); no status entry, so readers pass it over."""


def register_finished(
    ns: Any, job_id: str, entry: dict[str, Any], failures: list[dict[str, Any]], now: float | None = None
) -> None:
    """Publish a finished job's status entry and its last failures; prune expired records."""
    ended = time.time() if now is None else now
    entry = {**entry, "id": job_id, "ended": round(ended, 3)}
    meta_ended = f"{META_ENDED}{ended:.3f}"
    ns.register(
        FAILURES_PREFIX + job_id,
        PLACEHOLDER_URI,
        safe=False,
        metadata={meta_ended, META_FAILURES + json.dumps(failures, separators=(",", ":"))},
    )
    ns.register(
        FINISHED_PREFIX + job_id,
        PLACEHOLDER_URI,
        safe=False,
        metadata={meta_ended, META_ENTRY + json.dumps(entry, separators=(",", ":"))},
    )
    prune_if_due(ns, ended)


def _meta(metadata: Any, prefix: str) -> str | None:
    for item in metadata:
        if isinstance(item, str) and item.startswith(prefix):
            return item[len(prefix) :]
    return None


def parse_finished(
    listing: dict[str, Any], now: float, keep_s: float = KEEP_FINISHED_S
) -> list[dict[str, Any]]:
    """Status entries of the finished jobs in a ``list(prefix=FINISHED_PREFIX, return_metadata=True)``.

    Newest first; expired or malformed records are left out.
    """
    entries = []
    for _uri, metadata in listing.values():
        raw = _meta(metadata, META_ENTRY)
        try:
            entry = json.loads(raw) if raw is not None else None
        except ValueError:
            continue
        if isinstance(entry, dict) and now - float(entry.get("ended", 0)) <= keep_s:
            entries.append(entry)
    return sorted(entries, key=lambda e: -float(e.get("ended", 0)))


def find_finished(ns: Any, now: float | None = None) -> list[dict[str, Any]]:
    """The finished jobs still listed, newest first."""
    listing = ns.list(prefix=FINISHED_PREFIX, return_metadata=True)
    return parse_finished(listing, time.time() if now is None else now)


def finished_failures(ns: Any, job_id: str) -> list[dict[str, Any]]:
    """The last failures a finished job published (empty when there are none or the record is gone)."""
    listing = ns.list(prefix=FAILURES_PREFIX + job_id, return_metadata=True)
    value = listing.get(FAILURES_PREFIX + job_id)
    raw = _meta(value[1], META_FAILURES) if value else None
    try:
        failures = json.loads(raw) if raw is not None else []
    except ValueError:
        return []
    return failures if isinstance(failures, list) else []


def expired(listing: dict[str, Any], now: float, keep_s: float = KEEP_FINISHED_S) -> list[str]:
    """Names in a metadata listing whose record ended more than ``keep_s`` ago (or cannot say when)."""
    names = []
    for name, (_uri, metadata) in listing.items():
        raw = _meta(metadata, META_ENDED)
        try:
            ended = float(raw) if raw is not None else 0.0
        except ValueError:
            ended = 0.0
        if now - ended > keep_s:
            names.append(name)
    return names


def _prune_due(ns: Any, now: float) -> bool:
    """True when no job's end pruned in the ``PRUNE_EVERY_S`` before ``now``; the mark then says
    ``now`` (two jobs ending together may both prune: removing is idempotent)."""
    try:
        _uri, metadata = ns.lookup(PRUNED_MARK, return_metadata=True)
        last = float(_meta(metadata, META_ENDED) or 0.0)
    except (Pyro5.errors.NamingError, ValueError):
        last = 0.0
    if 0.0 <= now - last < PRUNE_EVERY_S:
        return False
    ns.register(PRUNED_MARK, PLACEHOLDER_URI, safe=False, metadata={f"{META_ENDED}{now:.3f}"})
    return True


def prune_if_due(ns: Any, now: float) -> int:
    """:func:`prune` when it is due (:func:`_prune_due`); how many records went. A caller whose
    role may not delete them (a viewer's ``status`` or dashboard) leaves them to the jobs."""
    try:
        return prune(ns, now) if _prune_due(ns, now) else 0
    except PermissionError:
        return 0


def prune(ns: Any, now: float | None = None, keep_s: float = KEEP_FINISHED_S) -> int:
    """Remove expired finished-job records; how many were removed."""
    now = time.time() if now is None else now
    removed = 0
    for prefix in (FINISHED_PREFIX, FAILURES_PREFIX):
        for name in expired(ns.list(prefix=prefix, return_metadata=True), now, keep_s):
            removed += ns.remove(name)
    return removed
