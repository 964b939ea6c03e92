"""A worker's execution slots: each batch runs in one slot, a child process or a thread.

``batch`` runs one batch's calls under their own timeouts, ``gate`` admits batches to the slots
across coordinators, ``process`` and ``threads`` are the two pools, and ``share`` is what a slot
process shares with its worker (progress, cancel flags, the outcomes finished so far).
``forkserver`` starts the server that slot processes are forked from: importing this package
loads no pool, so a worker starts that server before it loads the slot code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyrocluster.slots.process import ProcessSlots
    from pyrocluster.slots.threads import ThreadSlots


def make_slots(pool: str, n: int, task_modules: list[str], reply_bytes: int) -> ProcessSlots | ThreadSlots:
    """Slots of the given kind (``process`` or ``thread``) for replies of up to ``reply_bytes``."""
    if pool == "process":
        from pyrocluster.slots.process import ProcessSlots

        return ProcessSlots(n, task_modules, reply_bytes)
    from pyrocluster.slots.threads import ThreadSlots

    return ThreadSlots(n, task_modules)
