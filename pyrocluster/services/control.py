"""The exposed control object of a worker: ping, load, info, stats, drain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import Pyro5.api

from pyrocluster.services.state import WorkerState


@Pyro5.api.expose
class ControlService:
    """Liveness and introspection; ``drain`` asks the worker to stop gracefully."""

    def __init__(self, state: WorkerState, load: Callable[[], dict[str, int]] | None = None) -> None:
        self._state = state
        self._load = load

    def ping(self) -> str:
        """Answer at once: the coordinator's liveness probe."""
        return "pong"

    def load(self) -> dict[str, int]:
        """``{"slots", "running", "queued"}`` of the compute slots, across every coordinator (cheap)."""
        return self._load() if self._load else {"slots": 0, "running": 0, "queued": 0}

    def info(self) -> dict[str, Any]:
        """Name, address, services, tags, state, slots and counters."""
        return self._state.info()

    def stats(self) -> dict[str, Any]:
        """The counters only."""
        info = self._state.info()
        keys = ("state", "slots", "busy", "done", "failed", "mean_ms", "uptime_s", "cpu_percent", "rss_mb")
        return {k: info[k] for k in keys}

    def task_stats(self) -> dict[str, Any]:
        """Outcome counters and the duration histogram of each task this worker ran."""
        return self._state.task_snapshot()

    def drain(self) -> bool:
        """Stop taking work, finish what is held, unregister and exit."""
        self._state.stop_event.set()
        return True
