"""Idle Pyro5 servers of ours poll rarely (a wake-up every few seconds, not several a second),
and a shutdown still ends their request loop at once rather than at the next poll."""

from __future__ import annotations

import threading
import time

import Pyro5
import pytest

from pyrocluster import auth, config
from pyrocluster.config import Settings


@pytest.mark.timeout(30)
def test_shutdown_ends_an_idle_request_loop_long_before_its_poll_timeout() -> None:
    settings = Settings()
    config.apply(settings)
    poll_s = Pyro5.config.POLLTIMEOUT
    assert poll_s >= 5.0  # what makes idle workers cheap (docs/scaling.md)
    daemon = auth.SecureDaemon(settings, "127.0.0.1", 0)
    loop = threading.Thread(target=daemon.requestLoop, name="idle-daemon", daemon=True)
    loop.start()
    time.sleep(0.2)  # the loop is in its select, waiting up to poll_s
    started = time.monotonic()
    daemon.shutdown()
    loop.join(poll_s)
    took = time.monotonic() - started
    assert not loop.is_alive()
    assert took < poll_s / 2, f"shutdown waited for the poll: {took:.2f} s"
