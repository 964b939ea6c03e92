"""Drive a crawl: the frontier decides what to fetch, the cluster's crawl service fetches it.

All frontier calls happen on the thread that runs :meth:`CrawlRun.run`; futures only post their
outcomes to a queue, so the frontier needs no lock.

Page fetches are retried here, not by the dispatcher: a fetch that may succeed later (429, 5xx,
a timeout, a worker lost during the fetch) goes back to the frontier, which hands it out again
under the host's rate like any other request (SPEC: the rate holds with retries included).
robots.txt follows RFC 9309: 2xx gives the rules, 4xx allows everything, and a 5xx or a
robots.txt that cannot be fetched disallows the whole host.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pyrocluster.coordinator.calls import Call
from pyrocluster.crawl.policy import Frontier
from pyrocluster.errors import TaskFailed, error_record

MAX_IN_FLIGHT = 512
"""Pages being fetched at once by one crawl."""
ROBOTS_MAX_BYTES = 500_000
"""Largest robots.txt read, in bytes."""
IDLE_WAIT_S = 0.5
"""Longest sleep of the crawl loop when nothing happens."""

PAGE_OPTIONS = ("extract", "max_bytes", "timeout", "user_agent")
"""Crawl options that go to the worker with every fetch."""
ROBOTS_OPTIONS = {"body": True, "max_bytes": ROBOTS_MAX_BYTES, "any_status": True}
"""Fetch options of a robots.txt request: its status decides, so HTTP errors come back as pages."""


def crawl_id(url: str) -> str:
    """The results-file id of a page."""
    return f"crawl:{url}"


class CrawlRun:
    """One crawl: seeds, scope, limits; ``run(emit, stop)`` fetches until the frontier is done."""

    def __init__(
        self,
        cluster: Any,
        seeds: Iterable[str],
        *,
        allow: Iterable[str] | None = None,
        max_pages: int | None = None,
        max_depth: int | None = None,
        per_host_rate: float | None = None,
        robots: bool = True,
        retries: int | None = None,
        tags: Iterable[str] = (),
        **options: Any,
    ) -> None:
        unknown = set(options) - set(PAGE_OPTIONS)
        if unknown:
            raise TypeError(f"unknown crawl option(s): {', '.join(sorted(unknown))}")
        self.cluster = cluster
        self.frontier = Frontier(
            seeds, list(allow) if allow else None, max_pages, max_depth, robots, per_host_rate
        )
        self.options = {k: v for k, v in options.items() if v is not None}
        self.timeout = float(self.options.get("timeout", 30.0))
        self.retries = cluster.retries if retries is None else retries
        self.tags = tuple(tags)
        self._attempts: dict[str, int] = {}  # url -> attempts of its earlier, retried fetches
        self.in_flight = 0
        self.emitted = 0
        self._outcomes: queue.SimpleQueue[Call] = queue.SimpleQueue()

    def restore(self, records: Iterable[dict[str, Any]]) -> int:
        """Feed pages already ``ok`` in a results file (not fetched again; their links still count)."""
        n = 0
        for rec in records:
            if rec.get("kind") == "crawl" and rec.get("status") == "ok" and isinstance(rec.get("url"), str):
                result = rec.get("result") or {}
                self.frontier.restore(rec["url"], int(rec.get("depth", 0)), result.get("links") or ())
                n += 1
        return n

    def known(self) -> int:
        """Pages recorded, being fetched or waiting: the crawl's total so far."""
        return self.emitted + self.in_flight + self.frontier.pending()

    def _new_fetch(self, tag: str, key: Any, depth: int, url: str, options: dict[str, Any]) -> Call:
        """A fetch call for :meth:`run` to submit (with the others of its round)."""
        # A page gets no dispatcher retries (retries=0): _settle retries it through the frontier.
        # robots.txt fetches (outside the rate) keep the dispatcher's: an unreachable one would
        # close the whole host.
        retries = self.retries if tag == "robots" else 0
        call = self.cluster.make_call(
            "crawl", "fetch", [url], options, tags=self.tags, timeout=self.timeout, retries=retries,
            waiter=self, tag=(tag, key, depth),
        )  # fmt: skip
        self.in_flight += 1
        return call

    def settled(self, calls: list[Call]) -> None:
        """Fetches ended (called by the dispatcher): hand them to the crawl loop's thread."""
        for call in calls:
            self._outcomes.put(call)

    def run(self, emit: Callable[[dict[str, Any]], None], stop: threading.Event) -> None:
        """Crawl until done or ``stop``; ``emit`` gets every page record (ok, failed or skipped)."""
        frontier = self.frontier
        while not stop.is_set():
            calls = [
                self._new_fetch("robots", host, 0, frontier.robots_url(host), ROBOTS_OPTIONS)
                for host in frontier.needs_robots()
            ]
            # Hand out no more than the workers can fetch now, so the per-host rate applies to
            # requests, not to a queue in front of them.
            room = min(MAX_IN_FLIGHT, max(1, self.cluster.capacity("crawl"))) - self.in_flight
            if room > 0:
                for url, depth in frontier.next_ready(limit=room):
                    calls.append(self._new_fetch("page", url, depth, url, self.options))
            if calls:
                self.cluster.submit_calls(calls)  # one hand-over to the dispatcher per round
            for url, depth, reason in frontier.pop_skipped():
                self._emit(
                    emit,
                    {
                        "id": crawl_id(url),
                        "kind": "crawl",
                        "url": url,
                        "depth": depth,
                        "status": "skipped",
                        "reason": reason,
                        "worker": None,
                        "attempts": 0,
                        "elapsed_ms": 0.0,
                    },
                )
            if self.in_flight == 0 and frontier.is_finished():
                return
            wake_at = frontier.next_ready_time() if room > 0 else None  # full: only an outcome helps
            wait = IDLE_WAIT_S if wake_at is None else min(IDLE_WAIT_S, max(0.0, wake_at - time.monotonic()))
            try:
                item = self._outcomes.get(timeout=wait)
            except queue.Empty:
                continue
            self._settle(item, emit)
            while True:
                try:
                    self._settle(self._outcomes.get_nowait(), emit)
                except queue.Empty:
                    break

    def _emit(self, emit: Callable[[dict[str, Any]], None], record: dict[str, Any]) -> None:
        self.emitted += 1
        emit(record)

    def _settle(self, call: Call, emit: Callable[[dict[str, Any]], None]) -> None:
        tag, key, depth = call.tag
        self.in_flight -= 1
        if tag == "robots":
            self._robots(key, call)
            return
        attempts = self._attempts.pop(key, 0) + call.attempts
        if call.error is not None and self._retryable(call, attempts):
            self._attempts[key] = attempts
            self.frontier.requeue(key)
            return
        record: dict[str, Any] = {"id": crawl_id(key), "kind": "crawl", "url": key, "depth": depth}
        if call.error is None:
            page = call.value
            record["status"] = "ok"
            record["result"] = page
            self.frontier.add_links(key, depth, page.get("links") or (), final_url=page.get("final_url"))
        else:
            record["status"] = "failed"
            record["error"] = error_record(call.error)
            if attempts > call.attempts and not isinstance(call.error, TaskFailed):
                record["error"]["message"] = f"gave up after {attempts} attempts: {call.last_error}"
        record.update(worker=call.worker, attempts=attempts, elapsed_ms=round(call.elapsed_ms, 3))
        self.frontier.mark_done(key)
        self._emit(emit, record)

    def _retryable(self, call: Call, attempts: int) -> bool:
        """A failed page fetch to try again: it reached a worker, did not fail for good, has attempts left.

        ``TaskFailed`` is the page's own answer (4xx, a refused scheme, ...); the rest (TRANSIENT
        answers, a worker lost mid-fetch) may succeed later. A call that never reached a worker
        (no worker within ``wait``) is not retried: the frontier would only wait again.
        """
        return call.attempts > 0 and not isinstance(call.error, TaskFailed) and attempts <= self.retries

    def _robots(self, host: str, call: Call) -> None:
        """RFC 9309: 2xx gives the rules, 4xx (or a redirect loop) allows all, 5xx or no answer none."""
        page = call.value if call.error is None else None
        if isinstance(page, dict):
            status = page.get("http_status")
            if isinstance(status, int) and 200 <= status < 300:
                text = page.get("text")
                self.frontier.set_robots(host, text if isinstance(text, str) else None)
            elif isinstance(status, int) and 400 <= status < 500:
                self.frontier.set_robots(host, None)
            else:
                self.frontier.robots_unavailable(host, f"answered {status}")
        elif isinstance(call.error, TaskFailed) and call.error.type == "TooManyRedirects":
            self.frontier.set_robots(host, None)  # RFC 9309 2.3.1.2: treated as unavailable (4xx)
        else:
            error = call.error
            reason = error.message if isinstance(error, TaskFailed) else call.last_error or str(error)
            self.frontier.robots_unavailable(host, f"could not be fetched ({reason})")
