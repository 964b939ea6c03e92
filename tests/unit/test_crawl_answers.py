"""Reading HTTP answers with no I/O: statuses worth another attempt, Retry-After in both forms."""

from __future__ import annotations

from email.utils import formatdate

from pyrocluster.crawl.answers import retry_after_s, retryable_status, status_text


def test_statuses_that_say_later():
    assert all(retryable_status(s) for s in (500, 503, 408, 425, 429))
    assert not any(retryable_status(s) for s in (200, 304, 400, 403, 404, 410))


def test_retry_after_as_seconds_or_an_http_date():
    assert retry_after_s("2") == 2.0 and retry_after_s(" 120 ") == 120.0
    now = 1_800_000_000.0
    assert retry_after_s(formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert retry_after_s(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert retry_after_s("soon") is None and retry_after_s("") is None and retry_after_s(None) is None
    assert retry_after_s("-5") is None


def test_status_text():
    assert status_text(404) == "404 Not Found" and status_text(599) == "599"
