"""A second SIGTERM or SIGINT arriving while the first is being handled ends the process as the first
would, never deadlocks it (the scheduler's, the name server's, the worker's and submit's handlers)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from pyrocluster.cli.common import stop_on_signals


@pytest.fixture
def handlers_restored() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


class SignalledInsideSet(threading.Event):
    """An Event whose ``set`` is interrupted once by SIGTERM while it holds its lock, as when
    ``timeout`` signals a process and its group, or a user presses Ctrl-C twice."""

    def __init__(self) -> None:
        super().__init__()
        self.signalled = False

    def set(self) -> None:
        with self._cond:
            if not self.signalled:
                self.signalled = True
                handler = signal.getsignal(signal.SIGTERM)
                assert callable(handler)
                handler(signal.SIGTERM, None)  # the second signal lands here
            self._flag = True
            self._cond.notify_all()


@pytest.mark.timeout(20)
def test_a_signal_that_lands_inside_stop_set_does_not_deadlock(handlers_restored) -> None:
    stop = SignalledInsideSet()
    stop_on_signals(stop)
    returned = threading.Event()

    def first_signal() -> None:
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        handler(signal.SIGTERM, None)
        stop.set()  # what the first signal leads to, on whichever thread runs it
        returned.set()

    threading.Thread(target=first_signal, daemon=True).start()
    assert returned.wait(5), "the second signal deadlocked the first one's stop.set()"
    assert stop.wait(5) and stop.signalled
