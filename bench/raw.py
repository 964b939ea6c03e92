"""The raw Pyro5 baseline: one plain daemon exposing ``add``, msgpack, TCP_NODELAY.

``serve_in_thread()`` runs it in a thread of the calling process (the in-process baseline);
``python -m bench.raw`` runs it in a process of its own, prints its URI and exits when its
stdin closes (a second baseline that, like a pyrocluster worker, does not share our GIL).
``python -m bench.raw --hop`` runs ``add`` in a child process that the daemon reaches over a
``multiprocessing`` pipe, one message each way: the least any design pays that keeps the
worker's daemon between the coordinator and a killable slot process (the floor of the path).
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from typing import Any

import msgpack
import Pyro5
import Pyro5.api


def configure() -> None:
    """The transport settings pyrocluster uses too: msgpack, no Nagle, a thread-pool server."""
    Pyro5.config.SERIALIZER = "msgpack"
    Pyro5.config.SOCK_NODELAY = True
    Pyro5.config.SERVERTYPE = "thread"
    Pyro5.config.COMMTIMEOUT = 0.0


@Pyro5.api.expose
class Adder:
    """The task of W1, as a bare Pyro5 object."""

    def add(self, a: Any, b: Any) -> Any:
        """Return ``a + b``."""
        return a + b


@Pyro5.api.expose
class PipedAdder:
    """``add`` run by a child process, one pipe message each way (as a process slot's batch)."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("forkserver")
        self._conn, child = ctx.Pipe()
        self._lock = threading.Lock()
        self._child = ctx.Process(target=_add_forever, args=(child,), daemon=True)
        self._child.start()
        child.close()

    def add(self, a: Any, b: Any) -> Any:
        """Return ``a + b``, computed by the child."""
        with self._lock:
            self._conn.send_bytes(msgpack.packb([a, b]))
            return msgpack.unpackb(self._conn.recv_bytes())


def _add_forever(conn: Any) -> None:
    """The child of :class:`PipedAdder`: add what comes until the pipe closes."""
    while True:
        try:
            a, b = msgpack.unpackb(conn.recv_bytes())
        except (EOFError, OSError):
            return
        conn.send_bytes(msgpack.packb(a + b))


def serve_in_thread(hop: bool = False) -> tuple[Any, str, threading.Thread]:
    """Start a daemon on 127.0.0.1 in a daemon thread; return it, its URI and the thread."""
    configure()
    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    uri = str(daemon.register(PipedAdder() if hop else Adder(), objectId="adder"))
    thread = threading.Thread(target=daemon.requestLoop, name="raw-pyro5", daemon=True)
    thread.start()
    return daemon, uri, thread


def proxy(uri: str) -> Any:
    """A connected msgpack proxy (proxies belong to one thread)."""
    configure()
    p = Pyro5.api.Proxy(uri)
    p._pyroSerializer = "msgpack"
    p._pyroBind()
    return p


def sequential(p: Any, items: list[tuple[int, int]]) -> list[Any]:
    """One round trip per call."""
    add = p.add
    return [add(a, b) for a, b in items]


def batched(p: Any, items: list[tuple[int, int]]) -> list[Any]:
    """Every call in one ``BatchProxy`` request."""
    with Pyro5.api.BatchProxy(p) as batch:
        for a, b in items:
            batch.add(a, b)
        return list(batch())


def main() -> None:
    """Serve until stdin closes."""
    daemon, uri, thread = serve_in_thread(hop="--hop" in sys.argv[1:])
    print(uri, flush=True)
    sys.stdin.read()
    daemon.shutdown()
    thread.join(timeout=5)


if __name__ == "__main__":
    main()
