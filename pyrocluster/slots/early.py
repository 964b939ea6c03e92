"""Slot processes asked for as the worker starts, not when its start reaches them.

The fork server (``forkserver.py``) is a fresh interpreter that loads the slot module before it
forks anything. A worker that asked for its slot processes once it had loaded its own modules,
reached the name server and bound its daemon then waited for the fork server, on the path to its
ready line: about 0.1 s on a quiet 2-core machine in ``submit --local 2``. A thread started right
after the fork server asks for them at once, so that wait overlaps the worker's own start-up;
the worker takes them (or the error making them raised) where it used to make them.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyrocluster.config import Settings
    from pyrocluster.slots.process import ProcessSlots


def slot_reply_bytes(settings: Settings) -> int:
    """The largest reply a slot sends: small values, and one of up to ``max_value_bytes``."""
    return settings.max_message_bytes + settings.max_value_bytes


class EarlySlots:
    """``n`` process slots being made in a thread; :meth:`result` waits for them."""

    def __init__(self, n: int, task_modules: list[str], reply_bytes: int) -> None:
        self._slots: ProcessSlots | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._make, args=(n, task_modules, reply_bytes), name="early-slots", daemon=True
        )
        self._thread.start()

    def _make(self, n: int, task_modules: list[str], reply_bytes: int) -> None:
        try:
            from pyrocluster.slots.process import ProcessSlots

            self._slots = ProcessSlots(n, task_modules, reply_bytes)
        except BaseException as exc:  # raised by result(), where the worker would have raised it
            self._error = exc

    def result(self) -> ProcessSlots:
        """The slots, once made; raises what making them raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._slots is not None
        return self._slots
