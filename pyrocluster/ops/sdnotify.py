"""The systemd notify protocol, spoken directly: one datagram to ``$NOTIFY_SOCKET`` per message.

No dependency: the protocol is a Unix datagram of ``KEY=VALUE`` lines. Without
``NOTIFY_SOCKET`` (not started by systemd with ``Type=notify``) every call does nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket


def _address() -> str | None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path or not (path.startswith("/") or path.startswith("@")):
        return None
    return "\0" + path[1:] if path.startswith("@") else path  # '@' is the abstract namespace


def notify(message: str) -> bool:
    """Send ``message`` (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``...); False when nobody listens."""
    address = _address()
    if address is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
        sock.sendto(message.encode(), address)
        return True
    return False


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``; None without a watchdog.

    ``WATCHDOG_PID``, when set, must be this process (systemd sets it for the main process).
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
