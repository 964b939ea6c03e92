"""The exposed control object of a worker: ping, load, info, stats, drain and undrain."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import Pyro5.api

from pyrocluster.roles import audit, check, requires
from pyrocluster.services.state import WorkerState
from pyrocluster.tokens import Role

log = logging.getLogger(__name__)


@Pyro5.api.expose
class ControlService:
    """Liveness and introspection for viewers; ``drain``/``undrain`` for operators."""

    def __init__(
        self,
        state: WorkerState,
        load: Callable[[], dict[str, int]] | None = None,
        on_drain: Callable[[bool], None] | None = None,
    ) -> None:
        self._state = state
        self._load = load
        self._on_drain = on_drain
        """Told when ``drain``/``undrain`` change the state (the slots lent to direct calls)."""

    @requires(Role.VIEWER, "ping workers")
    def ping(self) -> str:
        """Answer at once: the coordinator's liveness probe."""
        return "pong"

    @requires(Role.VIEWER, "read worker load")
    def load(self) -> dict[str, int]:
        """``{"slots", "running", "queued"}`` of the compute slots, across every coordinator (cheap)."""
        return self._load() if self._load else {"slots": 0, "running": 0, "queued": 0}

    @requires(Role.VIEWER, "read worker info")
    def info(self) -> dict[str, Any]:
        """Name, address, services, tags, state, slots and counters."""
        return self._state.info()

    @requires(Role.VIEWER, "read worker stats")
    def stats(self) -> dict[str, Any]:
        """The counters only."""
        info = self._state.info()
        keys = ("state", "slots", "busy", "done", "failed", "mean_ms", "uptime_s", "cpu_percent", "rss_mb")
        return {k: info[k] for k in keys}

    @requires(Role.VIEWER, "read task stats")
    def task_stats(self) -> dict[str, Any]:
        """Outcome counters and the duration histogram of each task this worker ran."""
        return self._state.task_snapshot()

    def drain(self) -> bool:
        """Take no new work (state ``draining``) and stay up: what runs finishes. True when it changed."""
        peer = check(Role.OPERATOR, "drain workers")
        changed = not self._state.draining
        self._state.draining = True
        if self._on_drain is not None:
            self._on_drain(True)
        audit(peer, "drain", worker=self._state.name)
        return changed

    def undrain(self) -> bool:
        """Take work again after ``drain`` (not once the worker is stopping). True when it changed."""
        peer = check(Role.OPERATOR, "undrain workers")
        if self._state.stop_event.is_set():
            log.warning("undrain refused: the worker is stopping")
            return False
        changed = self._state.draining
        self._state.draining = False
        if self._on_drain is not None:
            self._on_drain(False)
        audit(peer, "undrain", worker=self._state.name)
        return changed
