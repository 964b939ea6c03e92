"""What the coordinator knows of each worker: state, slots, batches in flight, task catalog, load.

Plain data read and changed under the dispatcher's lock; no sockets, no clock of its own (times
are passed in), so balancing and failover decisions can be tested without a cluster.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from pyrocluster.coordinator.balancer import BatchSizer
from pyrocluster.coordinator.calls import Batch, Requirement
from pyrocluster.coordinator.retry import Quarantine
from pyrocluster.nameserver.registry import WorkerEntry
from pyrocluster.protocol import HELD_PER_SLOT
from pyrocluster.resources import fits, thawed, units_free

READY, SUSPECT, DRAINING, GONE = "ready", "suspect", "draining", "gone"
"""Worker states: takes work / set aside and re-probed / refuses work / forgotten."""
BUSY_BACKOFF_S = 0.05
"""Seconds a worker that answered ``busy`` counts as full when it sends no load."""


def parse_load(load: Any) -> tuple[int, int] | None:
    """``(slots, running + queued)`` from a worker's LOAD dict, or None when it is not one."""
    if type(load) is not dict and not isinstance(load, Mapping):  # a dict skips the ABC check
        return None
    try:
        slots, running, queued = int(load["slots"]), int(load["running"]), int(load["queued"])
    except (KeyError, TypeError, ValueError):
        return None
    return slots, max(0, running) + max(0, queued)


class WorkerRecord:
    """One worker as the dispatcher sees it."""

    def __init__(
        self,
        entry: WorkerEntry,
        max_batch: int,
        out: Counter[tuple[str, str]] | None = None,
        full: Counter[tuple[str, str]] | None = None,
    ) -> None:
        self.name = entry.name
        self.out: Counter[tuple[str, str]] = Counter() if out is None else out
        """Batches in flight per (service, task) over every worker of the dispatcher (shared)."""
        self.full: Counter[tuple[str, str]] = Counter() if full is None else full
        """Those that count against the cap of a cheap task's batches out (``Batch.full``; shared)."""
        self.entry = entry
        self.tags = entry.tags
        self.tasks = entry.tasks
        """Compute task names it offers (from its registration)."""
        self.missing: set[str] = set()
        """Tasks it answered UNKNOWN_TASK for since its catalog was last read."""
        self.state = READY
        self.quarantine = Quarantine()
        self.batches: dict[int, Batch] = {}
        self.in_flight: dict[str, int] = {s: 0 for s in entry.uris}
        self.sizers: dict[str, BatchSizer] = {s: BatchSizer(limit=max_batch) for s in entry.uris}
        self.others = 0
        """Compute batches other coordinators hold there (running or queued), from its last LOAD."""
        self.load_seen = False
        """Whether a LOAD of it came yet (it is probed at once for one: ``wants_probes``)."""
        self.used: dict[str, float] = {}
        """Its resources held by running batches of every coordinator, from its last LOAD."""
        self.full_until = 0.0

    def refresh(self, entry: WorkerEntry) -> None:
        """A new listing of the same registration (tags or catalog may have changed)."""
        self.entry, self.tags = entry, entry.tags
        if entry.tasks != self.tasks:
            self.tasks = entry.tasks
            self.missing.clear()

    def offers(self, req: Requirement) -> bool:
        """True when it offers the service and task and carries every tag."""
        service, tags, task, _, ask = req
        if service not in self.entry.uris or not tags <= self.tags:
            return False
        if service != "compute":
            return True
        if ask and not fits(thawed(ask), self.entry.resources):
            return False
        return task in self.tasks and task not in self.missing

    def room(self, service: str, now: float) -> int:
        """Batches this coordinator may still send it: one per slot, and ``HELD_PER_SLOT`` per
        compute slot while other coordinators hold work there (the worker queues what finds no
        free slot and starts it in its fair order; alone, calls wait here, where a cancel or a
        coordinator that exits takes them back at once)."""
        if self.state != READY or service not in self.in_flight or now < self.full_until:
            return 0
        per_slot = HELD_PER_SLOT if service == "compute" and self.others > 0 else 1
        return per_slot * self.entry.slots.get(service, 0) - self.in_flight[service]

    def slots(self, service: str) -> int:
        """Its slots for ``service`` (from its registration)."""
        return self.entry.slots.get(service, 0)

    def free_slots(self, service: str) -> int:
        """Its slots for ``service`` not held by anyone, as far as we know (may be negative)."""
        held = self.in_flight.get(service, 0) + (self.others if service == "compute" else 0)
        return self.entry.slots.get(service, 0) - held

    def observe_load(self, load: Any) -> None:
        """Learn what the worker holds across all coordinators (a reply's or a probe's LOAD)."""
        parsed = parse_load(load)
        if parsed is not None:
            self.load_seen = True
            self.others = max(0, parsed[1] - self.in_flight.get("compute", 0))
            self.full_until = 0.0
            used = load.get("used")  # absent: each running batch holds the default cpu 1
            if type(used) is dict or isinstance(used, Mapping):
                self.used = {str(k): float(v) for k, v in used.items() if isinstance(v, (int, float))}
            else:
                self.used = {"cpu": float(load.get("running", 0))}

    def free_for(self, ask: Mapping[str, float]) -> float:
        """How many more calls of ``ask`` its free resources hold, as far as we know."""
        return units_free(ask, self.entry.resources, self.used)

    def answered_busy(self, now: float) -> None:
        """The worker's admission queue was full."""
        self.full_until = now + BUSY_BACKOFF_S

    def busy(self) -> bool:
        """True while any batch of ours is in flight on it."""
        return bool(self.batches)

    def wants_probes(self) -> bool:
        """Probe it while it holds our work, or others' work that keeps its slots from us, and once
        as soon as it is known: whether others hold work there decides how much we may queue there
        (``room``), so that a job of a higher priority queues at a busy worker from its first
        batches and starts at its next free slot, not one round of other jobs' tasks later."""
        return self.busy() or self.others > 0 or not self.load_seen

    def retire(self, batch: Batch) -> bool:
        """Remove a batch; False when it had already been taken back."""
        if self.batches.pop(batch.id, None) is None:
            return False
        self.in_flight[batch.service] -= 1
        self._count(batch, -1)
        return True

    def add(self, batch: Batch) -> None:
        """Count a batch as sent."""
        self.batches[batch.id] = batch
        self.in_flight[batch.service] += 1
        self._count(batch, 1)

    def _count(self, batch: Batch, step: int) -> None:
        self.out[batch.cost_key] += step
        if batch.full:
            self.full[batch.cost_key] += step

    def clear(self) -> list[Batch]:
        """Forget every batch in flight (they were taken back); return them."""
        batches = list(self.batches.values())
        self.batches.clear()
        for batch in batches:
            self._count(batch, -1)
        for service in self.in_flight:
            self.in_flight[service] = 0
        return batches
