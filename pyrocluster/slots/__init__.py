"""A worker's execution slots: each batch runs in one slot, a child process or a thread.

``batch`` runs one batch's calls under their own timeouts, ``gate`` admits batches to the slots
across coordinators, ``process`` and ``threads`` are the two pools.
"""

from __future__ import annotations

from pyrocluster.slots.process import ProcessSlots
from pyrocluster.slots.threads import ThreadSlots


def make_slots(pool: str, n: int, task_modules: list[str]) -> ProcessSlots | ThreadSlots:
    """Slots of the given kind (``process`` or ``thread``)."""
    return (ProcessSlots if pool == "process" else ThreadSlots)(n, task_modules)
