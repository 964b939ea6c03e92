"""A task that wedges its worker's Pyro5 request loop while the process (and its open connections) runs on.

The thread-pool server's accept loop hands each new connection to its pool; after this task the
hand-off blocks for ever, so the loop accepts one more connection and then serves no new one.
Connections already open (the caller's) keep working: only a fresh connection sees the wedge.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

from Pyro5.svr_threads import SocketServer_Threadpool

from pyrocluster import task


@task
def wedge_request_loop() -> int:
    """Block the accept loop of every thread-pool daemon in this process at its next connection."""
    servers = [obj for obj in gc.get_objects() if isinstance(obj, SocketServer_Threadpool)]
    never = threading.Event()

    def stuck(job: Any) -> None:
        never.wait()

    for server in servers:
        server.pool.process = stuck  # type: ignore[method-assign]
    return len(servers)
