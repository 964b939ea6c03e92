"""Before a job runs: the live workers of an earlier look-up answer at once when they meet every
need; otherwise the preflight looks again until a worker offering what is missing registers."""

from __future__ import annotations

import threading

from pyrocluster import config
from pyrocluster.config import Settings
from pyrocluster.coordinator.preflight import look_up_live, wait_for_workers
from pyrocluster.nameserver.registry import WorkerEntry
from tests.conftest import wait_for

COMPUTE = ("compute", frozenset[str]())


def test_an_earlier_look_up_that_meets_the_needs_is_the_answer_without_the_name_server() -> None:
    known = [WorkerEntry("w1", uris={"compute": "PYRO:x@127.0.0.1:1", "control": "PYRO:y@127.0.0.1:1"})]
    nobody_there = Settings.from_sources(ns="127.0.0.1:1")
    assert wait_for_workers(nobody_there, [COMPUTE], 0.0, first=known) is known


def test_an_earlier_look_up_without_the_worker_needed_waits_for_one(nameserver: str, worker_factory) -> None:
    settings = Settings.from_sources(ns=nameserver)
    config.apply(settings)
    first = look_up_live(settings)
    assert first == []
    found: list[list[WorkerEntry]] = []
    waiting = threading.Thread(target=lambda: found.append(wait_for_workers(settings, [COMPUTE], 60, first)))
    waiting.start()
    try:
        worker_factory(1, "--services", "compute")
        wait_for(lambda: found, 60, what="the preflight's answer")
    finally:
        waiting.join(timeout=70)
    assert [e.services for e in found[0]] and "compute" in found[0][0].uris
