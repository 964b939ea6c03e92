"""Pure retry and quarantine policy: attempts left, and when to probe a set-aside worker again."""

from __future__ import annotations

from dataclasses import dataclass

BACKOFF_BASE_S = 0.5
"""First wait before re-probing a failed worker, in seconds."""
BACKOFF_MAX_S = 8.0
"""Longest wait between re-probes, in seconds."""


def attempts_left(attempts: int, retries: int) -> bool:
    """True while a call that has used ``attempts`` may be tried again (``retries`` further attempts)."""
    return attempts <= retries


@dataclass
class Quarantine:
    """Exponential backoff for one set-aside worker; time is passed in (``now``), never read."""

    failures: int = 0
    next_probe_at: float = 0.0

    def set_aside(self, now: float) -> None:
        """Record a failure; the next probe waits twice as long as the last (capped)."""
        self.failures += 1
        self.next_probe_at = now + self.delay()

    def delay(self) -> float:
        """Seconds to wait after the current number of failures."""
        return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(0, self.failures - 1))

    def due(self, now: float) -> bool:
        """True when it is time to probe again."""
        return now >= self.next_probe_at

    def clear(self) -> None:
        """The worker answered: forget its failures."""
        self.failures = 0
        self.next_probe_at = 0.0
