"""One host of the crawl frontier: its queue, its robots.txt rules and its request rate (pure logic).

The frontier (:mod:`pyrocluster.crawl.policy`) keeps one :class:`Host` per ``host[:port]``;
the times here are the frontier's injected clock, passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protego import Protego

MAX_PAUSE_S = 300.0
"""Longest pause a ``Retry-After`` answer may put on a host, in seconds."""
MAX_CRAWL_DELAY_S = 30.0
"""Longest robots.txt ``Crawl-delay`` honoured, in seconds (a longer one would stall the job)."""
ROBOTS_AGENT = "pyrocluster"
"""User-agent token matched against robots.txt groups."""
SKIPPED_ROBOTS = "disallowed by robots.txt"
"""``reason`` of a URL skipped because robots.txt disallows it."""
SKIPPED_ROBOTS_UNAVAILABLE = "robots.txt {why}: RFC 9309 disallows the whole host"
"""``reason`` of a URL skipped because its host's robots.txt answered 5xx or could not be reached."""

UNKNOWN, WANTED, REQUESTED, KNOWN = 0, 1, 2, 3
"""robots.txt state of a host: not asked for yet, to fetch, being fetched, known."""


@dataclass
class Host:
    """Per-host queue, robots.txt rules and rate-limit state."""

    scheme: str
    interval: float = 0.0  # seconds between two requests (0: no limit)
    queue: list[tuple[int, int, str]] = field(default_factory=list)  # heap of (priority, seq, url)
    robots_state: int = UNKNOWN
    rules: Protego | None = None
    blocked: str | None = None  # skip reason for every URL when robots.txt was unavailable
    next_at: float = float("-inf")  # earliest time the next request may start
    busy: int = 0  # requests handed out and not yet answered
    serial: bool = False  # a Crawl-delay: one request at a time, the delay counted from its answer

    # ---- robots.txt ------------------------------------------------------------------------

    def set_robots(self, text: str | None, agent: str, now: float) -> None:
        """The host's robots.txt (None: none there, everything allowed).

        A ``Crawl-delay`` (up to ``MAX_CRAWL_DELAY_S``) makes the host serial: one request at a
        time, the next starting no sooner than the delay after the last answer, counting from now.
        """
        self.robots_state = KNOWN
        self.rules = None
        self.blocked = None
        if not text:
            return
        try:
            self.rules = Protego.parse(text)
            delay = self.rules.crawl_delay(agent)
        except Exception:  # an unparsable robots.txt is treated as none
            self.rules, delay = None, None
        if delay:
            self.interval = max(self.interval, min(float(delay), MAX_CRAWL_DELAY_S))
            self.serial = True
            self.next_at = max(self.next_at, now + self.interval)

    def robots_unavailable(self, why: str) -> None:
        """robots.txt answered 5xx or could not be fetched: every URL of the host is skipped."""
        self.robots_state = KNOWN
        self.rules = None
        self.blocked = SKIPPED_ROBOTS_UNAVAILABLE.format(why=why)

    def allows(self, url: str, agent: str) -> bool:
        """Whether robots.txt lets ``agent`` fetch ``url`` (a host without rules allows all)."""
        if self.blocked is not None:
            return False
        if self.rules is None:
            return True
        try:
            return bool(self.rules.can_fetch(url, agent))
        except Exception:  # protego failing on an odd URL: do not let it stop the crawl
            return True

    def skip_reason(self) -> str:
        """Why a URL of this host that robots.txt forbids is skipped."""
        return self.blocked or SKIPPED_ROBOTS

    # ---- rate --------------------------------------------------------------------------------

    def spend(self, now: float) -> None:
        """One request starts now: the next may start one interval later."""
        if self.interval:
            self.next_at = max(now, self.next_at) + self.interval

    def pause(self, seconds: float, now: float) -> None:
        """No request for ``seconds`` (at most ``MAX_PAUSE_S``)."""
        self.next_at = max(self.next_at, now + min(float(seconds), MAX_PAUSE_S))

    def answered(self, now: float) -> None:
        """A request of this host has its answer: a serial host starts its delay now."""
        self.busy -= 1
        if self.serial:
            self.next_at = max(self.next_at, now + self.interval)
