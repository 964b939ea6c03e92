"""One long-running command's supervision: its health endpoint, its liveness prober, systemd notify."""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable

from pyrocluster.errors import ConfigError
from pyrocluster.ops import sdnotify
from pyrocluster.ops.health import Check, HealthServer, Prober


class Supervision:
    """Started once the command serves; ``ready()`` after its ready line, ``stopping()`` as it drains.

    The prober runs only when someone listens: a health port or a systemd watchdog.
    """

    def __init__(
        self, probe: Callable[[], str | None], ready: Check, health_host: str, health_port: int | None
    ) -> None:
        self.prober = Prober(probe)
        self._ready = ready
        self._stopping = False
        self.server: HealthServer | None = None
        if health_port is not None:
            try:
                self.server = HealthServer(health_host, health_port, self.prober.check, self.readiness)
            except OSError as exc:
                where = f"--health-host {health_host} --health-port {health_port}"
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(f"{where}: the port is already in use") from None
                raise ConfigError(f"{where}: {exc.strerror or exc}") from None

    def readiness(self) -> str | None:
        """None when the process takes work, else why not."""
        return self._ready() or ("stopping" if self._stopping else None)

    def start(self, probe_always: bool = False) -> Supervision:
        """Serve the endpoint; probe when someone reads the result (or ``probe_always``)."""
        if self.server is not None:
            self.server.start()
        if probe_always or self.server is not None or self.prober.watchdog:
            self.prober.start()
        return self

    @property
    def health_address(self) -> str | None:
        """``HOST:PORT`` of the health endpoint, if any."""
        return self.server.address if self.server is not None else None

    def ready(self) -> None:
        """Tell systemd the command is ready (``READY=1``)."""
        sdnotify.notify("READY=1")

    def stopping(self) -> None:
        """Tell systemd (``STOPPING=1``) and the readiness probe that the command is draining."""
        if not self._stopping:
            self._stopping = True
            sdnotify.notify("STOPPING=1")

    def stopping_when(self, stop: threading.Event) -> None:
        """Call :meth:`stopping` as soon as ``stop`` is set (for commands that stop on an event)."""

        def watch() -> None:
            stop.wait()
            self.stopping()

        threading.Thread(target=watch, name="stopping-watch", daemon=True).start()

    def close(self) -> None:
        """Stop probing and serving the endpoint."""
        self.prober.stop()
        if self.server is not None:
            self.server.close()
