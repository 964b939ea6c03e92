"""A worker's execution slots: each batch runs in one slot, a child process or a thread.

``batch`` runs one batch's calls under their own timeouts, ``gate`` admits batches to the slots
across coordinators, ``process`` and ``threads`` are the two pools, and ``share`` is what a slot
process shares with its worker (progress, cancel flags, the outcomes finished so far).
"""

from __future__ import annotations

from pyrocluster.slots.direct import DirectSpec
from pyrocluster.slots.process import ProcessSlots
from pyrocluster.slots.threads import ThreadSlots


def make_slots(
    pool: str, n: int, task_modules: list[str], reply_bytes: int, direct: DirectSpec | None = None
) -> ProcessSlots | ThreadSlots:
    """Slots of the given kind (``process`` or ``thread``) for replies of up to ``reply_bytes``;
    process slots also serve direct calls with ``direct`` (``direct.py``)."""
    if pool == "process":
        return ProcessSlots(n, task_modules, reply_bytes, direct)
    return ThreadSlots(n, task_modules)
