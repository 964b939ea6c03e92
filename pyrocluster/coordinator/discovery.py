"""Learning the workers: the name server's listing now and every ``DISCOVERY_INTERVAL_S``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pyrocluster.config import Settings
from pyrocluster.defaults import CONNECT_TIMEOUT_S, DISCOVERY_INTERVAL_S
from pyrocluster.nameserver import registry
from pyrocluster.nameserver.registry import WorkerEntry

log = logging.getLogger(__name__)


class Discovery:
    """A thread that reads the workers from the name server and hands each listing to ``apply``.

    The name-server proxy belongs to that thread. When the name server is away the known
    workers are kept (``apply`` is simply not called).
    """

    def __init__(self, settings: Settings, apply: Callable[[list[WorkerEntry]], None]) -> None:
        self._settings = settings
        self._apply = apply
        self._ns: Any = None
        self._ns_ok = False
        self.failure: Exception | None = None
        """Why the latest look-up failed (None once one succeeded)."""
        self._first = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="discovery", daemon=True)

    def start(self) -> None:
        """Start, and return once the first look-up is done (or has taken too long)."""
        self._thread.start()
        self._first.wait(CONNECT_TIMEOUT_S * 2)

    def stop(self) -> None:
        """Ask the thread to end."""
        self._stopping.set()

    def join(self) -> None:
        """Wait a little for the thread to end."""
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def discover(self) -> bool:
        """One look-up; False when the name server was unreachable or its listing unreadable."""
        try:
            if self._ns is None:
                self._ns = registry.connect(self._settings)
            entries = registry.find_workers(self._ns)
        except Exception as exc:  # NS away, or a listing we cannot read: keep the known workers
            if self._ns_ok:
                log.warning("name server unreachable, keeping the known workers: %s", exc)
            self._ns_ok = False
            self.failure = exc
            self._release()
            return False
        self._ns_ok = True
        self.failure = None
        self._apply(registry.compatible(entries))  # never work for a worker of another release
        return True

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.discover()
            except Exception:  # never let one bad round end discovery for good
                log.exception("worker discovery failed")
            self._first.set()
            self._stopping.wait(DISCOVERY_INTERVAL_S)
        self._release()

    def _release(self) -> None:
        if self._ns is not None:
            try:
                self._ns._pyroRelease()
            except Exception:  # a proxy of a dead connection may fail to close
                log.debug("name server proxy release failed", exc_info=True)
            self._ns = None
