"""How a crawl reads an HTTP answer: which statuses are worth another attempt, ``Retry-After`` (pure)."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from http import HTTPStatus

from pyrocluster.errors import TaskFailed, WorkerUnavailable, error_record

PAUSING_STATUSES = (429, 503)
"""Statuses whose ``Retry-After`` pauses the host."""


def retryable_status(status: int) -> bool:
    """True for an answer that says "later", not "never": 5xx, 408, 425, 429."""
    return status >= 500 or status in (408, 425, 429)


def status_text(status: int) -> str:
    """``404 Not Found``: the status and its reason phrase (the status alone when unknown)."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def fetch_failure(error: BaseException, attempts: int, here: int, last_reason: str) -> dict[str, str]:
    """The ``error`` of a page whose fetch failed for good after ``attempts`` in all (``here`` of
    them by its last call, the rest the crawl's own retries): the site's own failure when the
    worker reported one (a refused connection, a timeout), not the worker's giving up."""
    record = error_record(error)
    cause = error.cause if isinstance(error, WorkerUnavailable) else None
    if cause is not None:
        record = {"type": cause["type"], "message": cause["message"], "traceback": ""}
        if attempts > 1:
            record["message"] = f"gave up after {attempts} attempts: {cause['message']}"
    elif attempts > here and not isinstance(error, TaskFailed):
        record["message"] = f"gave up after {attempts} attempts: {last_reason}"
    return record
