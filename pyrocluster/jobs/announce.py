"""A running job's small Pyro object in the name server, so that ``status`` can show its progress."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import Pyro5.api

from pyrocluster.auth import SecureDaemon
from pyrocluster.config import Settings, is_loopback
from pyrocluster.nameserver import registry

log = logging.getLogger(__name__)


@Pyro5.api.expose
class JobProgress:
    """Answers ``progress()`` with the job's name, done/total, failed and rate."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def progress(self) -> dict[str, Any]:
        """The job's counters now."""
        snap = self._snapshot()
        return {k: snap[k] for k in ("name", "done", "total", "failed", "rate")}


def local_address_towards(host: str) -> str:
    """The local IP address that packets to ``host`` leave from."""
    if is_loopback(host):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))  # UDP connect sends nothing; it only picks the route
        return str(probe.getsockname()[0])


class Announcement:
    """Registers a job while it runs; every failure here is logged, never fatal to the job."""

    def __init__(self, settings: Settings, name: str, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._settings = settings
        self._registered_as = f"{name}@{socket.gethostname()}-{os.getpid()}"
        self._snapshot = snapshot
        self._daemon: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Announcement:
        try:
            host = local_address_towards(self._settings.ns_host)
            if not is_loopback(host) and self._settings.secret is None:
                log.warning("not announcing the job: no cluster secret to protect a non-loopback listener")
                return self
            self._daemon = SecureDaemon(self._settings, host=host, port=0)
            uri = self._daemon.register(JobProgress(self._snapshot))
            self._thread = threading.Thread(target=self._daemon.requestLoop, name="job-announce", daemon=True)
            self._thread.start()
            ns = registry.connect(self._settings)
            try:
                registry.register_job(ns, self._registered_as, str(uri))
            finally:
                ns._pyroRelease()
        except Exception as exc:  # status is a convenience: the job runs without it
            log.warning("could not announce the job in the name server: %s", exc)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._daemon is None:
            return
        try:
            ns = registry.connect(self._settings, timeout_s=2.0)
            try:
                registry.unregister_job(ns, self._registered_as)
            finally:
                ns._pyroRelease()
        except Exception as exc:  # the name server may be gone; the entry then dies with it
            log.warning("could not remove the job from the name server: %s", exc)
        self._daemon.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._daemon.close()
