"""Slot processes asked for as the worker's start begins, not when it reaches them.

The fork server (``forkserver.py``) is a fresh interpreter that loads the slot module before it
forks anything. A worker that asked for its slot processes once it had loaded its user tasks,
reached the name server and bound its daemon then waited for the fork server, on the path to its
ready line (about 0.1 s in a one-worker profile on a quiet 2-core machine). A thread started as
``Worker.start`` begins asks for them at once, so that wait overlaps the rest of the start; the
worker takes them (or the error making them raised) where it used to make them.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

DISCARD_WAIT_S = 5.0
"""Seconds a failed start waits for the slots to stop them (past that, they end with the worker)."""

if TYPE_CHECKING:
    from pyrocluster.config import Settings
    from pyrocluster.slots.direct_spec import DirectSpec
    from pyrocluster.slots.process import ProcessSlots


def slot_reply_bytes(settings: Settings) -> int:
    """The largest reply a slot sends: small values, and one of up to ``max_value_bytes``."""
    return settings.max_message_bytes + settings.max_value_bytes


class EarlySlots:
    """``n`` process slots being made in a thread; :meth:`result` waits for them."""

    def __init__(
        self, n: int, task_modules: list[str], reply_bytes: int, direct: DirectSpec | None = None
    ) -> None:
        """``direct``: how the slots serve direct calls (``direct.py``), None for not at all."""
        self._slots: ProcessSlots | None = None
        self._error: BaseException | None = None
        args = (n, task_modules, reply_bytes, direct)
        self._thread = threading.Thread(target=self._make, args=args, name="early-slots", daemon=True)
        self._thread.start()

    def _make(self, n: int, task_modules: list[str], reply_bytes: int, direct: DirectSpec | None) -> None:
        try:
            from pyrocluster.slots.process import ProcessSlots

            self._slots = ProcessSlots(n, task_modules, reply_bytes, direct)
        except BaseException as exc:  # raised by result(), where the worker would have raised it
            self._error = exc

    def result(self) -> ProcessSlots:
        """The slots, once made; raises what making them raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._slots is not None
        return self._slots

    def discard(self) -> None:
        """Stop the slots once made: the worker's start failed before it took them. Slots still
        not made after ``DISCARD_WAIT_S`` end with the worker's process (they are daemonic)."""
        self._thread.join(DISCARD_WAIT_S)
        if not self._thread.is_alive() and self._slots is not None:
            self._slots.close()
