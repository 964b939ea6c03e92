"""Crawl frontier: seen-set, depth, scope, and which URL goes next under robots.txt and per-host rate.

Each host's own rules and rate live in :mod:`pyrocluster.crawl.hosts`.

Pure logic: no sockets, no Pyro5, no httpx. The clock is injected (``now``) so that tests of
the rate limit need no real waiting. The caller (the crawl runner) drives it::

    frontier = Frontier(seeds, allow, max_pages=500, max_depth=3, robots=True, per_host_rate=20)
    loop:
        for host in frontier.needs_robots():        # fetch frontier.robots_url(host), then
            ...                                     # frontier.set_robots(host, text or None), or
            ...                                     # frontier.robots_unavailable(host, why) on 5xx
        for url, depth in frontier.next_ready(limit=free_slots):
            ...                                     # dispatch a fetch of url
        on a redirect: frontier.add_hop(url, target, depth)   # None: queued; else why the page ends
        on 429/503:   frontier.pause(url, retry_after_s); frontier.requeue(url)
        on a page:    frontier.add_links(url, depth, page["links"], final_url=page["final_url"])
                      frontier.mark_done(url)
        on a failure: frontier.mark_done(url)       # or frontier.requeue(url) to retry it later
        for url, depth, reason in frontier.pop_skipped():
            ...                                     # record it as skipped
        sleep until frontier.next_ready_time() (or an outcome arrives); stop when is_finished()
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable

from pyrocluster.crawl.hosts import KNOWN, REQUESTED, ROBOTS_AGENT, UNKNOWN, WANTED, Host
from pyrocluster.crawl.urls import host_key, key_of_normal, normalize_absolute, normalize_url

MAX_REDIRECTS = 5
"""Redirect hops one page may take before it fails with ``TooManyRedirects``."""
SKIPPED_SCOPE = "not in allow"
"""Rule named when a redirect hop leaves the hosts of ``allow``."""
HOP_SEEN = "seen"
"""``add_hop``'s answer when the hop's target is already crawled or queued on its own."""

_NOT_QUEUED = (-1, -1)


class Frontier:
    """What to crawl next: dedupes, bounds depth and page count, scopes, honours robots.txt and rate."""

    def __init__(
        self,
        seeds: Iterable[str],
        allow: Iterable[str] | None = None,
        max_pages: int | None = None,
        max_depth: int | None = None,
        robots: bool = True,
        per_host_rate: float | None = None,
        *,
        now: Callable[[], float] = time.monotonic,
        agent: str = ROBOTS_AGENT,
        track_queued: bool = False,
        free: Callable[[str], bool] | None = None,
    ) -> None:
        """Queue the seeds at depth 0; ``allow`` defaults to the seeds' hosts.

        ``max_pages``/``max_depth`` None mean no limit; ``per_host_rate`` is in requests per
        second per host (None or 0: no limit), with a burst of one. ``track_queued`` keeps every
        URL queued for ``pop_queued`` (a crawl that keeps its frontier in a state file).
        ``free(url)`` true means the caller answers that URL without a request (a page kept
        unchanged from an earlier crawl): it is handed out outside the host's rate.
        """
        if per_host_rate is not None and per_host_rate < 0:
            raise ValueError("per_host_rate must be positive")
        self.max_pages = max_pages
        self.max_depth = max_depth
        self.robots = robots
        self.agent = agent
        self._interval = 1.0 / per_host_rate if per_host_rate else 0.0
        self._now = now
        self._seq = 0
        self._seen: set[str] = set()  # every URL ever queued, handed out, restored or skipped
        # url -> (depth, seq) of its live heap entry; entries whose seq differs are stale
        self._queued: dict[str, tuple[int, int]] = {}
        self._in_flight: dict[str, int] = {}  # url -> depth, handed out and not yet done
        self._hosts: dict[str, Host] = {}
        self._robots_wanted: list[str] = []
        self._skipped: list[tuple[str, int, str]] = []
        self._new: list[tuple[str, int]] | None = [] if track_queued else None
        self._free = free
        self._free_out: set[str] = set()  # handed out under the free rule: no request, no rate
        self.handed_out = 0
        """Pages handed out for fetching (and pages restored from a previous run)."""
        self.done = 0
        """Pages marked done."""
        self.skipped = 0
        """URLs skipped (robots.txt)."""
        normal_seeds = []
        for seed in seeds:
            normal = normalize_url(seed)
            if normal is None:
                raise ValueError(f"seed is not an http(s) URL: {seed!r}")
            normal_seeds.append(normal)
        self.allow = (
            {host_key(entry) for entry in allow} if allow else {key_of_normal(s) for s in normal_seeds}
        )
        outside = [s for s in normal_seeds if key_of_normal(s) not in self.allow]
        if outside:  # every request of a crawl goes to an allowed host, a seed's too
            raise ValueError(f"seed {outside[0]!r} is not on an allowed host ({key_of_normal(outside[0])})")
        for normal in normal_seeds:
            self._offer(normal, 0)

    # ---- feeding ---------------------------------------------------------------------------

    def add_links(
        self, parent_url: str, depth: int, links: Iterable[str], final_url: str | None = None
    ) -> int:
        """Queue the in-scope links of a page fetched at ``depth`` (at ``depth + 1``); return how many.

        ``final_url`` (after redirects) is marked seen so that it is not fetched again; relative
        links resolve against it.
        """
        base = final_url or parent_url
        if final_url:
            normal = normalize_url(final_url)
            if normal is not None and normal not in self._seen:
                self._seen.add(normal)
        child = depth + 1
        if self.max_depth is not None and child > self.max_depth:
            return 0
        if self.max_pages is not None and self.handed_out >= self.max_pages:
            return 0
        added = 0
        for link in links:
            if not isinstance(link, str):
                continue
            normal = (
                normalize_absolute(link) if link[:8].lower().startswith(("http://", "https://")) else None
            )
            if normal is None:
                normal = normalize_url(link, base)
            if normal is not None and self._offer(normal, child):
                added += 1
        return added

    def add_hop(self, from_url: str, target: str, depth: int) -> str | None:
        """A handed-out URL answered a redirect to ``target`` (normalised): queue the hop as a request.

        The hop goes through the same rules as a link (scope, robots.txt, rate, seen set) but
        not ``max_depth``, and the page is still one toward ``max_pages``. Returns None when
        queued (its robots.txt may still skip it: see ``pop_skipped``), ``HOP_SEEN`` when the
        target is crawled on its own, else the rule that forbids it; then the page is done.
        """
        queued = self._in_flight.pop(from_url, None) is not None
        if queued:
            self._answered(from_url)
        verdict = self._hop_verdict(target)
        if verdict is not None:
            self.done += queued
            return verdict
        if queued:
            self.handed_out -= 1  # handed out again as its hop
        self._seen.add(target)
        key = key_of_normal(target)
        host = self._host_for(key, target)
        if self.robots and host.robots_state == UNKNOWN:
            host.robots_state = WANTED
            self._robots_wanted.append(key)
        self._push(host, target, depth, -1)  # -1: a page under way goes before new ones
        return None

    def _hop_verdict(self, target: str) -> str | None:
        if target in self._seen:
            return HOP_SEEN
        key = key_of_normal(target)
        if key not in self.allow:
            return SKIPPED_SCOPE
        host = self._hosts.get(key)
        known = self.robots and host is not None and host.robots_state == KNOWN
        if known and host is not None and not host.allows(target, self.agent):
            return host.skip_reason()
        return None

    def pause(self, url: str, seconds: float, now: float | None = None) -> None:
        """No request to ``url``'s host for ``seconds`` (a ``Retry-After``; at most ``hosts.MAX_PAUSE_S``)."""
        host = self._hosts.get(key_of_normal(url))
        if host is None or not seconds > 0:
            return
        host.pause(seconds, self._now() if now is None else now)

    def restore(self, url: str, depth: int, links: Iterable[str] = ()) -> None:
        """For ``--resume``: a page already fetched ok in an earlier run; counts toward max_pages."""
        normal = normalize_url(url)
        if normal is None:
            return
        if normal in self._queued or normal not in self._seen:
            self._queued.pop(normal, None)  # a stale heap entry stays behind and is skipped
            self._seen.add(normal)
            self.handed_out += 1
            self.done += 1
        self.add_links(normal, depth, links)

    def _offer(self, url: str, depth: int) -> bool:
        """Queue one normalised URL if it is new and in scope; True when queued."""
        if url in self._seen:
            queued = self._queued.get(url)
            if queued is not None and depth < queued[0]:  # found by a shorter path: move it up
                self._push(self._hosts[key_of_normal(url)], url, depth, depth)
            return False
        key = key_of_normal(url)
        if key not in self.allow:
            return False
        self._seen.add(url)
        host = self._host_for(key, url)
        if self.robots:
            if host.robots_state == KNOWN and not host.allows(url, self.agent):
                self._skip(url, depth, host)
                return False
            if host.robots_state == UNKNOWN:
                host.robots_state = WANTED
                self._robots_wanted.append(key)
        self._push(host, url, depth, depth)
        return True

    def _host_for(self, key: str, url: str) -> Host:
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = Host(scheme=url.partition(":")[0], interval=self._interval)
        return host

    def add(self, url: str, depth: int) -> bool:
        """Queue one URL found outside a page (a sitemap, a saved frontier) if new and in scope."""
        normal = normalize_url(url)
        return normal is not None and self._offer(normal, depth)

    def pop_queued(self) -> list[tuple[str, int]]:
        """URLs queued since the last call, as ``(url, depth)`` (only with ``track_queued``)."""
        new = self._new or []
        if self._new:
            self._new = []
        return new

    def _push(self, host: Host, url: str, depth: int, priority: int) -> None:
        if self._new is not None and priority >= 0:
            self._new.append((url, depth))
        self._seq += 1
        self._queued[url] = (depth, self._seq)
        heapq.heappush(host.queue, (priority, self._seq, url))

    # ---- robots.txt ------------------------------------------------------------------------

    def needs_robots(self, now: float | None = None) -> list[str]:
        """Hosts whose robots.txt must be fetched now (each reported once); their URLs wait for it.

        Reporting a host takes one request from its rate limit, for the robots.txt fetch.
        """
        if not self._robots_wanted or self._budget() <= 0:
            return []
        now = self._now() if now is None else now
        wanted, self._robots_wanted = self._robots_wanted, []
        for key in wanted:
            host = self._hosts[key]
            host.robots_state = REQUESTED
            host.spend(now)
        return wanted

    def robots_url(self, host: str) -> str:
        """URL of the robots.txt of a host that ``needs_robots`` reported."""
        known = self._hosts.get(host)
        return f"{known.scheme if known else 'http'}://{host}/robots.txt"

    def set_robots(self, host: str, text: str | None) -> None:
        """Give a host's robots.txt; None (none there: a 4xx answer) allows everything.

        Queued URLs it disallows move to the skipped list; a ``Crawl-delay`` makes the host
        serial (:meth:`Host.set_robots`).
        """
        entry = self._host_entry(host)
        entry.set_robots(text, self.agent, self._now())
        if entry.rules is not None:
            self._skip_disallowed(entry)

    def robots_unavailable(self, host: str, why: str) -> None:
        """A host's robots.txt answered 5xx or could not be fetched: skip all of the host (RFC 9309).

        ``why`` (e.g. ``"answered 503"``) goes into the skip reason of every URL of the host.
        """
        entry = self._host_entry(host)
        entry.robots_unavailable(why)
        self._skip_disallowed(entry)

    def _host_entry(self, host: str) -> Host:
        key = host.lower()
        entry = self._hosts.get(key)
        if entry is None:
            entry = self._hosts[key] = Host(scheme="http", interval=self._interval)
        return entry

    def _skip_disallowed(self, entry: Host) -> None:
        """Move the queued URLs of a host that its robots.txt disallows to the skipped list."""
        if not self.robots:
            return
        kept = []
        for priority, seq, url in entry.queue:
            depth, live_seq = self._queued.get(url, _NOT_QUEUED)
            if live_seq != seq:
                continue  # stale entry
            if entry.allows(url, self.agent):
                kept.append((priority, seq, url))
            else:
                del self._queued[url]
                self._skip(url, depth, entry)
        heapq.heapify(kept)
        entry.queue = kept

    def _skip(self, url: str, depth: int, host: Host) -> None:
        self.skipped += 1
        self._skipped.append((url, depth, host.skip_reason()))

    def pop_skipped(self) -> list[tuple[str, int, str]]:
        """URLs skipped since the last call, as ``(url, depth, reason)``; each reported once."""
        skipped, self._skipped = self._skipped, []
        return skipped

    # ---- handing out -----------------------------------------------------------------------

    def _budget(self) -> float:
        return float("inf") if self.max_pages is None else self.max_pages - self.handed_out

    def _head(self, host: Host) -> tuple[int, int, str] | None:
        """The host's next live queue entry (dropping stale ones), or None."""
        queue = host.queue
        while queue:
            _, seq, url = queue[0]
            if self._queued.get(url, _NOT_QUEUED)[1] == seq:
                return queue[0]
            heapq.heappop(queue)
        return None

    def _dispatchable(self, host: Host) -> bool:
        if host.serial and host.busy:
            return False
        return not (self.robots and host.robots_state != KNOWN) and self._head(host) is not None

    def next_ready(self, now: float | None = None, limit: int | None = None) -> list[tuple[str, int]]:
        """URLs that may be fetched now, as ``(url, depth)``: shallowest first, hosts in turn.

        At most ``limit`` (e.g. the free slots), never past ``max_pages``, and no host above its
        rate. Each URL is handed out once; give it back with ``mark_done`` or ``requeue``.
        """
        now = self._now() if now is None else now
        room = self._budget() if limit is None else min(self._budget(), limit)
        out: list[tuple[str, int]] = []
        while room > 0:
            progressed = False
            for host in self._hosts.values():
                if not self._dispatchable(host):
                    continue
                free = self._needs_no_request(host)
                if host.next_at > now and not free:
                    continue
                url = heapq.heappop(host.queue)[2]
                depth = self._queued.pop(url)[0]
                self._in_flight[url] = depth
                self.handed_out += 1
                if free:
                    self._free_out.add(url)
                else:
                    host.busy += 1
                    host.spend(now)
                out.append((url, depth))
                progressed = True
                room -= 1
                if room <= 0:
                    break
            if not progressed:
                break
        return out

    def next_ready_time(self, now: float | None = None) -> float | None:
        """When the next URL may be handed out (``now`` if one may now), or None if none is waiting.

        URLs held back for a robots.txt that is being fetched do not count: the caller waits
        for that fetch anyway.
        """
        if self._budget() <= 0:
            return None
        now = self._now() if now is None else now
        times = [
            now if self._needs_no_request(host) else max(now, host.next_at)
            for host in self._hosts.values()
            if self._dispatchable(host)
        ]
        return min(times) if times else None

    def _needs_no_request(self, host: Host) -> bool:
        """The host's next URL will be answered without a request (the ``free`` rule): no rate."""
        head = self._head(host)
        return self._free is not None and head is not None and self._free(head[2])

    def mark_done(self, url: str) -> bool:
        """A handed-out URL is finished (ok or failed for good); False if it was not in flight."""
        if self._in_flight.pop(url, None) is None:
            return False
        self._answered(url)
        self.done += 1
        return True

    def _answered(self, url: str) -> None:
        """A request handed out for ``url`` has its answer: a serial host may start the next delay."""
        if url in self._free_out:
            self._free_out.discard(url)
            return
        self._hosts[key_of_normal(url)].answered(self._now())

    def requeue(self, url: str) -> bool:
        """Put a handed-out URL back at the head of its host's queue to retry it under the rate limit.

        It does not count again toward ``max_pages``. False if it was not in flight.
        """
        depth = self._in_flight.pop(url, None)
        if depth is None:
            return False
        self._answered(url)
        self.handed_out -= 1
        self._push(self._hosts[key_of_normal(url)], url, depth, -1)  # -1: before every real depth
        return True

    # ---- progress --------------------------------------------------------------------------

    def pending(self) -> int:
        """URLs waiting to be handed out (including those held for robots.txt), within max_pages."""
        return int(min(len(self._queued), max(self._budget(), 0)))

    def in_flight(self) -> int:
        """URLs handed out and not yet marked done."""
        return len(self._in_flight)

    def unfinished(self) -> list[tuple[str, int]]:
        """``(url, depth)`` of the URLs handed out and not done, then of those waiting within
        ``max_pages`` in the order they were queued: what a stopped crawl leaves undone."""
        waiting = sorted(self._queued.items(), key=lambda item: item[1][1])[: self.pending()]
        return [*self._in_flight.items(), *((url, depth) for url, (depth, _) in waiting)]

    def is_finished(self) -> bool:
        """Nothing in flight and nothing more to hand out."""
        return not self._in_flight and self.pending() == 0

    def stats(self) -> dict[str, int]:
        """Counters for progress displays."""
        return {
            "seen": len(self._seen),
            "pending": self.pending(),
            "in_flight": len(self._in_flight),
            "handed_out": self.handed_out,
            "done": self.done,
            "skipped": self.skipped,
        }
