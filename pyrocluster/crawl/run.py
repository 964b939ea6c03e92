"""Drive a crawl: the frontier decides what to fetch, the cluster's crawl service fetches it.

All frontier calls happen on the thread that runs :meth:`CrawlRun.run`; futures only post their
outcomes to a queue, so the frontier needs no lock.

Page fetches are retried here, not by the dispatcher: a fetch that may succeed later (429, 5xx,
a timeout, a worker lost during the fetch) goes back to the frontier, which hands it out again
under the host's rate like any other request (SPEC: the rate holds with retries included); a
``Retry-After`` on a 429 or 503 pauses the host first. Workers follow no redirect for a crawl:
a 3xx comes back as it is and its target is queued as a hop through the frontier (scope,
robots.txt, rate, seen set), so no rule can be stepped around by a redirect.
robots.txt follows RFC 9309: 2xx gives the rules, 4xx allows everything, and a 5xx or a
robots.txt that cannot be fetched disallows the whole host.

With a ``state`` file the crawl is incremental (:mod:`pyrocluster.crawl.state`,
:mod:`pyrocluster.crawl.revisit`): records and the frontier are kept as the crawl goes, a
stopped run continues where it stopped, and a later run asks only for what changed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pyrocluster import codec
from pyrocluster.coordinator.calls import Call
from pyrocluster.crawl import answers
from pyrocluster.crawl.answers import PAUSING_STATUSES, retry_after_s, retryable_status, status_text
from pyrocluster.crawl.policy import HOP_SEEN, MAX_REDIRECTS, Frontier
from pyrocluster.crawl.revisit import REUSE, REVISIT_MODES, Plan, Stored, changed, plan, unchanged_result
from pyrocluster.crawl.sitemaps import MAX_SITEMAP_BYTES, SitemapFinder
from pyrocluster.crawl.state import CrawlState
from pyrocluster.crawl.urls import key_of_normal, normalize_url
from pyrocluster.errors import TaskFailed

MAX_IN_FLIGHT = 512
"""Pages being fetched at once by one crawl."""
ROBOTS_MAX_BYTES = 500_000
"""Largest robots.txt read, in bytes."""
ROBOTS_MAX_AGE_S = 86_400.0
"""A robots.txt kept in the state is used again for this long (RFC 9309 2.4: at most 24 hours)."""
ROUND_PAGES = 4
"""Pages handed out together once the workers are busy (fewer while they are idle, see ``_loop``)."""
IDLE_WAIT_S = 0.5
"""Longest sleep of the crawl loop when nothing happens."""
COMMIT_RECORDS = 64
"""With a state file, the records waiting are committed and emitted once this many wait..."""
COMMIT_EVERY_S = 0.02
"""... or once this long has passed since the last commit (so a record waits at most this long;
the frontier does not wait at all). A commit per round of outcomes made 388 SQLite transactions
of a 3,000-page crawl: the state cost the coordinator 76 ms of CPU, 46 ms with these two bounds
(W3 incremental's first crawl, alternating with and without state on a quiet machine)."""

PAGE_OPTIONS = ("extract", "max_bytes", "timeout", "user_agent")
"""Crawl options that go to the worker with every fetch."""
_EVERY_FETCH = {"any_status": True, "follow_redirects": False, "keep_headers": True}
"""Every crawl fetch: the status, redirects and ``Retry-After`` come back for this module to judge."""
ROBOTS_OPTIONS = {**_EVERY_FETCH, "body": True, "max_bytes": ROBOTS_MAX_BYTES}
"""Fetch options of a robots.txt request."""
SITEMAP_OPTIONS = {**_EVERY_FETCH, "raw": True, "max_bytes": MAX_SITEMAP_BYTES}
"""Fetch options of a sitemap request (raw bytes: it may be gzip)."""


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
        state: str | None = None,
        revisit: str | None = None,
        sitemaps: bool = False,
        headers: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
        **options: Any,
    ) -> None:
        unknown = set(options) - set(PAGE_OPTIONS)
        if unknown:
            raise TypeError(f"unknown crawl option(s): {', '.join(sorted(unknown))}")
        mode = revisit or "changed"
        if mode not in REVISIT_MODES:
            raise ValueError(f"revisit must be one of {', '.join(REVISIT_MODES)}")
        if revisit is not None and state is None:
            raise ValueError("revisit needs a state file")
        self.cluster = cluster
        self.seeds = [seeds] if isinstance(seeds, str) else list(seeds)
        self.frontier = Frontier(
            self.seeds, list(allow) if allow else None, max_pages, max_depth, robots, per_host_rate,
            track_queued=state is not None, free=self._reused if state is not None else None,
        )  # fmt: skip
        self.options = {k: v for k, v in options.items() if v is not None}
        self.timeout = float(self.options.get("timeout", 30.0))
        self.retries = cluster.retries if retries is None else retries
        self.tags = tuple(tags)
        self.mode = mode
        self.sitemaps = sitemaps
        # opened now: a file that is not a crawl state, or in use, fails before anything runs
        self._state = CrawlState(state) if state is not None else None
        self._secret = dict(headers or {})
        if cookies:
            jar = "; ".join(f"{name}={value}" for name, value in cookies.items())
            self._secret["Cookie"] = f"{self._secret['Cookie']}; {jar}" if "Cookie" in self._secret else jar
        self._page_options = {**self.options, **_EVERY_FETCH, **self._with_secret()}
        self._robots_options = {**ROBOTS_OPTIONS, **self._with_secret()}
        self._sitemap_options = {**SITEMAP_OPTIONS, **self._with_secret()}
        self._attempts: dict[str, int] = {}  # url -> attempts of its earlier, retried fetches
        self._chains: dict[str, tuple[str, int]] = {}  # hop URL queued -> (page URL, hops so far)
        self._visits: dict[str, tuple[Stored | None, Plan]] = {}  # URL -> its state and plan, until done
        self._sitemaps = SitemapFinder(self.frontier.allow)
        self._restored: set[str] = set()
        self._ready: list[dict[str, Any]] = []  # records of this round, emitted after the commit
        self._commit_due = 0.0  # when the state is committed next (monotonic), records waiting or not
        self.in_flight = 0
        self.emitted = 0
        self.retried = 0
        """Page fetches tried again by the crawl itself (its pages get no dispatcher retries)."""
        self._outcomes: queue.SimpleQueue[Call] = queue.SimpleQueue()

    def _with_secret(self) -> dict[str, Any]:
        return {"headers": self._secret} if self._secret else {}

    def restore(self, records: Iterable[dict[str, Any]]) -> int:
        """Feed pages already ``ok`` in a results file (not fetched again; their links still count)."""
        n = 0
        for rec in records:
            if rec.get("kind") == "crawl" and rec.get("status") == "ok" and isinstance(rec.get("url"), str):
                result = rec.get("result") or {}
                self.frontier.restore(rec["url"], int(rec.get("depth", 0)), result.get("links") or ())
                self._restored.add(rec["url"])
                n += 1
        return n

    def known(self) -> int:
        """Pages recorded, being fetched or waiting: the crawl's total so far."""
        return self.emitted + self.frontier.in_flight() + self.frontier.pending()

    def cancelled_records(self, reason: str) -> list[dict[str, Any]]:
        """A ``cancelled`` record for each page a stopped crawl leaves undone (being fetched, or
        waiting within ``max_pages``), so that its results file accounts for every page it knew."""
        records: dict[str, dict[str, Any]] = {}
        for url, depth in self.frontier.unfinished():
            page_url = self._chains.get(url, (url, 0))[0]  # a redirect's hop stands for its page
            record = self._record(page_url, depth, "cancelled", None, self._attempts.get(url, 0))
            record["reason"] = reason
            records.setdefault(page_url, record)
        return list(records.values())

    def _new_fetch(self, tag: str, key: Any, depth: int, url: str, options: dict[str, Any]) -> Call:
        """A fetch call for :meth:`run` to submit (with the others of its round)."""
        # A page gets no dispatcher retries (retries=0): _settle retries it through the frontier.
        # robots.txt and sitemap fetches (outside the rate) keep the dispatcher's: an unreachable
        # robots.txt would close the whole host.
        retries = 0 if tag == "page" else self.retries
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

    # ---- the loop ----------------------------------------------------------------------------

    def run(self, emit: Callable[[dict[str, Any]], None], stop: threading.Event) -> None:
        """Crawl until done or ``stop``; ``emit`` gets every page record (ok, failed or skipped)."""
        try:
            calls = self._begin()
            self._loop(emit, stop, calls)
            if self._state is not None and not stop.is_set():
                self._state.finish()
        finally:
            self.close()

    def close(self) -> None:
        """Close the state file (a run not finished is continued by the next crawl on it)."""
        if self._state is not None:
            self._state.close()

    def _begin(self) -> list[Call]:
        """Continue a stopped run from the state; the sitemap fetches to start with."""
        state = self._state
        if state is not None and state.continuing:
            for url, depth, record in state.done():
                if url not in self._restored:
                    self.frontier.restore(url, depth, (record.get("result") or {}).get("links") or ())
                    self._ready.append(record)
            for url, depth in state.queued():
                self.frontier.add(url, depth)
            self.frontier.pop_queued()  # kept already
        if self.sitemaps and not self.frontier.robots:
            return [
                c for seed in self.seeds for c in self._sitemap_fetches(self._sitemaps.for_host(seed, None))
            ]
        return []

    def _loop(self, emit: Callable[[dict[str, Any]], None], stop: threading.Event, calls: list[Call]) -> None:
        frontier = self.frontier
        while not stop.is_set():
            for host in frontier.needs_robots():
                calls.extend(self._robots_fetch(host))
            # Hand out no more than the workers can fetch now, so the per-host rate applies to
            # requests, not to a queue in front of them; while they are busy, in rounds of a few
            # pages, which the dispatcher sends to a worker as one batch (a round trip per page
            # cost more CPU than fetching it).
            full = min(MAX_IN_FLIGHT, max(1, self.cluster.capacity("crawl")))
            room = full - self.in_flight
            open_room = room >= min(ROUND_PAGES, max(1, full // 4))
            if open_room:
                for url, depth in frontier.next_ready(limit=room):
                    call = self._page_fetch(url, depth)
                    if call is not None:
                        calls.append(call)
            if calls:
                self.cluster.submit_calls(calls)  # one hand-over to the dispatcher per round
                calls = []
            for url, depth, reason in frontier.pop_skipped():
                self._skipped(url, depth, reason)
            self._flush(emit)
            if self.in_flight == 0 and frontier.is_finished():
                self._flush(emit, force=True)
                return
            wake_at = frontier.next_ready_time() if open_room else None  # full: only an outcome helps
            if self._ready:  # records wait for the next commit: wake for it at the latest
                wake_at = self._commit_due if wake_at is None else min(wake_at, self._commit_due)
            wait = IDLE_WAIT_S if wake_at is None else min(IDLE_WAIT_S, max(0.0, wake_at - time.monotonic()))
            try:
                item = self._outcomes.get(timeout=wait)
            except queue.Empty:
                continue
            calls.extend(self._settle(item))
            while True:
                try:
                    calls.extend(self._settle(self._outcomes.get_nowait()))
                except queue.Empty:
                    break
        self._flush(emit, force=True)

    def _flush(self, emit: Callable[[dict[str, Any]], None], force: bool = False) -> None:
        """Emit the records waiting, after committing the state (a recorded page is always in
        it): at once without a state, else when ``force`` or when the commit is due (``COMMIT_RECORDS``
        records wait or ``COMMIT_EVERY_S`` passed since the last commit)."""
        if self._state is not None:
            now = time.monotonic()
            if not force and len(self._ready) < COMMIT_RECORDS and now < self._commit_due:
                return
            self._state.save_queued(self.frontier.pop_queued())
            self._state.commit()
            self._commit_due = now + COMMIT_EVERY_S
        ready, self._ready = self._ready, []
        for record in ready:
            self.emitted += 1
            emit(record)

    # ---- pages -------------------------------------------------------------------------------

    def _visit(self, url: str) -> tuple[Stored | None, Plan]:
        """What the state knows of a page URL and how to visit it (looked up once per URL)."""
        visit = self._visits.get(url)
        if visit is None:
            assert self._state is not None
            stored = self._state.stored(url)
            visit = self._visits[url] = (stored, plan(self.mode, stored, self._sitemaps.lastmod.get(url)))
        return visit

    def _reused(self, url: str) -> bool:
        """The frontier's ``free`` rule: a page answered from the state, without a request."""
        return url not in self._chains and self._visit(url)[1].action == REUSE

    def _page_fetch(self, url: str, depth: int) -> Call | None:
        """The fetch of a URL handed out (a page, or the next hop of one); None when none is needed."""
        options = self._page_options
        if url not in self._chains and self._state is not None:
            stored, visit = self._visit(url)
            if visit.action == REUSE and stored is not None:
                self._unchanged(url, depth, stored, stored.result.get("http_status") or 200, None)
                return None
            if visit.headers:
                options = {**options, "headers": {**self._secret, **visit.headers}}
        return self._new_fetch("page", url, depth, url, options)

    def _settle(self, call: Call) -> list[Call]:
        """One fetch ended; the fetches it leads to (robots.txt or sitemaps) are returned."""
        tag, key, depth = call.tag
        self.in_flight -= 1
        if tag == "robots":
            return self._robots(key, depth, call)
        if tag == "sitemap":
            return self._sitemap(key, call)
        page_url, hops = self._chains.pop(key, (key, 0))
        attempts = self._attempts.pop(key, 0) + call.attempts
        if call.error is not None:
            if self._retryable(call, attempts):
                self._retry(key, page_url, hops, attempts)
                return []
            error = answers.fetch_failure(call.error, attempts, call.attempts, call.last_error)
            self._failed(key, page_url, depth, error, call, attempts)
            return []
        page = call.value
        status = page.get("http_status") or 0
        headers = page.pop("headers", None) or {}
        if 300 <= status < 400 and status != 304 and "location" in headers:
            self._hop(key, page_url, depth, hops, page, headers["location"], call, attempts)
        elif retryable_status(status) and call.attempts > 0 and attempts <= self.retries:
            pause = retry_after_s(headers.get("retry-after")) if status in PAUSING_STATUSES else None
            if pause:
                self.frontier.pause(key, pause)
            self._retry(key, page_url, hops, attempts)
        elif status >= 400:
            message = status_text(status)
            if attempts > 1:
                message = f"gave up after {attempts} attempts: {message}"
            failure: dict[str, Any] = {"type": "HTTPError", "message": message, "traceback": ""}
            failure["http_status"] = status
            self._failed(key, page_url, depth, failure, call, attempts)
        else:
            self._ok(key, page_url, depth, page, headers, call, attempts)
        return []

    def _retry(self, key: str, page_url: str, hops: int, attempts: int) -> None:
        self.retried += 1
        self._attempts[key] = attempts
        if hops:
            self._chains[key] = (page_url, hops)
        self.frontier.requeue(key)

    def _retryable(self, call: Call, attempts: int) -> bool:
        """A failed page fetch to try again: it reached a worker, did not fail for good, has attempts left.

        ``TaskFailed`` is the page's own answer (a refused scheme, a bad URL, ...); the rest (a
        timeout, a worker lost mid-fetch) may succeed later. A call that never reached a worker
        (no worker within ``wait``) is not retried: the frontier would only wait again.
        """
        return call.attempts > 0 and not isinstance(call.error, TaskFailed) and attempts <= self.retries

    def _record(
        self, page_url: str, depth: int, status: str, call: Call | None, attempts: int
    ) -> dict[str, Any]:
        return {
            "id": crawl_id(page_url), "kind": "crawl", "url": page_url, "depth": depth, "status": status,
            "worker": call.worker if call else None, "attempts": attempts,
            "elapsed_ms": round(call.elapsed_ms, 3) if call else 0.0,
        }  # fmt: skip

    def _ok(
        self, key: str, page_url: str, depth: int, page: dict[str, Any], headers: dict[str, str],
        call: Call, attempts: int,
    ) -> None:  # fmt: skip
        stored = self._visits.pop(page_url, (None, None))[0]
        self.frontier.mark_done(key)
        if page.get("http_status") == 304 and stored is not None:
            self._unchanged(page_url, depth, stored, 304, call, attempts, fetched=True)
            return
        page["url"] = page_url
        self.frontier.add_links(key, depth, page.get("links") or (), final_url=page.get("final_url"))
        record = self._record(page_url, depth, "ok", call, attempts)
        if self._state is not None:
            page["changed"] = changed(stored, page.get("sha256") or "")
        record["result"] = page
        if self._state is not None:
            direct = key == page_url  # validators of a redirected page belong to its target
            self._state.save_page(
                page_url, depth, record, sha256=page.get("sha256") or "",
                etag=headers.get("etag") if direct else None,
                last_modified=headers.get("last-modified") if direct else None,
            )  # fmt: skip
        self._ready.append(record)

    def _unchanged(
        self, url: str, depth: int, stored: Stored, status: int, call: Call | None,
        attempts: int = 0, fetched: bool = False,
    ) -> None:  # fmt: skip
        """A page known unchanged (a 304, or no request at all): the stored record, its links followed."""
        self._visits.pop(url, None)
        elapsed = round(call.elapsed_ms, 3) if call else 0.0
        result = unchanged_result(stored, status, elapsed)
        if not fetched:
            self.frontier.mark_done(url)
        self.frontier.add_links(url, depth, result.get("links") or (), final_url=result.get("final_url"))
        record = self._record(url, depth, "ok", call, attempts)
        record["result"] = result
        assert self._state is not None
        self._state.save_page(
            url, depth, record, sha256=stored.sha256, etag=stored.etag, last_modified=stored.last_modified,
            fetched=fetched,
        )  # fmt: skip
        self._ready.append(record)

    def _failed(
        self, key: str, page_url: str, depth: int, error: dict[str, Any], call: Call, attempts: int
    ) -> None:
        self._visits.pop(page_url, None)
        self.frontier.mark_done(key)
        record = self._record(page_url, depth, "failed", call, attempts)
        record["error"] = error
        self._ready.append(record)

    def _skipped(self, url: str, depth: int, reason: str) -> None:
        """A URL the frontier will not fetch: a page, or the hop of one (then the page is skipped)."""
        page_url, _ = self._chains.pop(url, (url, 0))
        self._skip_page(page_url, depth, reason if page_url == url else f"redirect to {url}: {reason}")

    def _skip_page(self, page_url: str, depth: int, reason: str) -> None:
        self._visits.pop(page_url, None)
        record = self._record(page_url, depth, "skipped", None, 0)
        record["reason"] = reason
        self._ready.append(record)

    def _hop(
        self, key: str, page_url: str, depth: int, hops: int, page: dict[str, Any], location: str,
        call: Call, attempts: int,
    ) -> None:  # fmt: skip
        """A redirect: its target is a request of its own, through every rule of the frontier."""
        if hops + 1 > MAX_REDIRECTS:
            message = f"more than {MAX_REDIRECTS} redirects"
            error = {"type": "TooManyRedirects", "message": message, "traceback": ""}
            self._failed(key, page_url, depth, error, call, attempts)
            return
        target = normalize_url(location)
        if target is None:
            self.frontier.mark_done(key)
            self._skip_page(page_url, depth, f"redirect to {location[:200]}: not an http(s) URL")
            return
        verdict = self.frontier.add_hop(key, target, depth)
        if verdict is None:
            self._chains[target] = (page_url, hops + 1)
        elif verdict == HOP_SEEN:  # the target is crawled (or queued) as a page of its own
            page.update(url=page_url, final_url=target, links=[], title=None)
            record = self._record(page_url, depth, "ok", call, attempts)
            record["result"] = page
            self._visits.pop(page_url, None)
            self._ready.append(record)
        else:
            self._chains[target] = (page_url, hops + 1)
            self._skipped(target, depth, verdict)

    # ---- robots.txt and sitemaps ---------------------------------------------------------------

    def _robots_fetch(self, host: str, url: str | None = None, hops: int = 0) -> list[Call]:
        """Fetch ``host``'s robots.txt, unless the state has it from the last 24 hours."""
        if url is None and self._state is not None:
            kept = self._state.robots(host, ROBOTS_MAX_AGE_S)
            if kept is not None:
                return self._robots_known(host, kept[0])
        url = url or self.frontier.robots_url(host)
        return [self._new_fetch("robots", host, hops, url, self._robots_options)]

    def _robots(self, host: str, hops: int, call: Call) -> list[Call]:
        """RFC 9309: 2xx gives the rules, 4xx (or a redirect elsewhere) allows all, 5xx or no answer none."""
        page = call.value if call.error is None else None
        if isinstance(page, dict):
            status = page.get("http_status")
            location = (page.get("headers") or {}).get("location")
            if isinstance(status, int) and 200 <= status < 300:
                text = page.get("text")
                return self._robots_known(host, text if isinstance(text, str) else None, keep=True)
            if isinstance(status, int) and 300 <= status < 400:
                target = normalize_url(location) if location else None
                # followed on the same host only, up to 5 hops (RFC 9309 2.3.1.2)
                if target is not None and key_of_normal(target) == host and hops < MAX_REDIRECTS:
                    return self._robots_fetch(host, target, hops + 1)
                return self._robots_known(host, None, keep=True)
            if isinstance(status, int) and 400 <= status < 500:
                return self._robots_known(host, None, keep=True)
            self.frontier.robots_unavailable(host, f"answered {status}")
        else:
            error = call.error
            reason = error.message if isinstance(error, TaskFailed) else call.last_error or str(error)
            self.frontier.robots_unavailable(host, f"could not be fetched ({reason})")
        return []

    def _robots_known(self, host: str, text: str | None, keep: bool = False) -> list[Call]:
        self.frontier.set_robots(host, text)
        if keep and self._state is not None:
            self._state.save_robots(host, text)
        if not self.sitemaps:
            return []
        return self._sitemap_fetches(self._sitemaps.for_host(self.frontier.robots_url(host), text))

    def _sitemap_fetches(self, urls: Iterable[str]) -> list[Call]:
        return [self._new_fetch("sitemap", url, 0, url, self._sitemap_options) for url in urls]

    def _sitemap(self, url: str, call: Call) -> list[Call]:
        """A sitemap arrived: queue its pages (their ``lastmod`` kept), fetch the sitemaps it lists."""
        page = call.value if call.error is None else None
        if not isinstance(page, dict) or page.get("http_status") != 200 or page.get("raw") is None:
            return []
        pages, more = self._sitemaps.read(url, codec.as_bytes(page["raw"]))
        for page_url in pages:
            self.frontier.add(page_url, 1)
        return self._sitemap_fetches(more)
