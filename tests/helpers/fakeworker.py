"""A real Pyro5 daemon on loopback that registers as a compute worker and answers what a test says.

It stands for a buggy or hostile worker (or anything between a worker and the coordinator): its
``compute.run_batch`` returns whatever structure ``answer(request)`` builds (or never returns,
while ``hang`` is set), and its ``control.load`` answers the coordinator's liveness probes as a
healthy worker does. It runs in the test's process on a thread of its own; :meth:`close`
unregisters it and stops it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import Pyro5.api

from pyrocluster import config
from pyrocluster.auth import SecureDaemon
from pyrocluster.config import Settings
from pyrocluster.nameserver import registry

Answer = Callable[[dict[str, Any]], Any]


@Pyro5.api.expose
class FakeCompute:
    def __init__(self, answer: Answer, hang: threading.Event, release: threading.Event) -> None:
        self._answer, self._hang, self._release = answer, hang, release

    def run_batch(self, request: dict[str, Any]) -> Any:
        if self._hang.is_set():
            self._release.wait(60)
        return self._answer(request)

    def cancel(self, sender: str, call_ids: list[str]) -> int:
        return 0


@Pyro5.api.expose
class FakeControl:
    def __init__(self, slots: int) -> None:
        self._slots = slots

    def load(self) -> dict[str, int]:
        return {"slots": self._slots, "running": 0, "queued": 0}

    def info(self) -> dict[str, Any]:
        return {"name": "fake", "load": self.load()}


class FakeWorker:
    """``FakeWorker(ns, name, answer)``: registered in ``ns`` as ``name`` offering ``tasks``."""

    def __init__(
        self, ns: str, name: str, answer: Answer, tasks: frozenset[str] = frozenset({"echo"}), slots: int = 1
    ) -> None:
        self.settings = Settings.from_sources(ns=ns)
        config.apply(self.settings)
        self.hang = threading.Event()
        """Set: ``run_batch`` answers nothing until :meth:`close` (its probes still answer)."""
        self._release = threading.Event()
        self._daemon = SecureDaemon(self.settings, host="127.0.0.1")
        uris = {
            registry.COMPUTE: str(self._daemon.register(FakeCompute(answer, self.hang, self._release))),
            registry.CONTROL: str(self._daemon.register(FakeControl(slots))),
        }
        self._thread = threading.Thread(target=self._daemon.requestLoop, name=f"fake-{name}", daemon=True)
        self._thread.start()
        self.name = name
        proxy = registry.connect(self.settings)
        try:
            registry.register_worker(proxy, name, uris, {registry.COMPUTE: slots}, (), tasks)
        finally:
            proxy._pyroRelease()

    def close(self) -> None:
        """Unregister and stop (a hanging ``run_batch`` is released first)."""
        self._release.set()
        proxy = registry.connect(self.settings)
        try:
            registry.unregister_worker(proxy, self.name)
        finally:
            proxy._pyroRelease()
        self._daemon.shutdown()
        self._thread.join(timeout=10)
        self._daemon.close()
