"""Before a job runs: the live workers of an earlier look-up answer at once when they meet every
need; otherwise the preflight looks again until a worker offering what is missing registers."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from pyrocluster import config
from pyrocluster.config import Settings
from pyrocluster.coordinator import preflight
from pyrocluster.coordinator.preflight import look_up_live, wait_for_workers
from pyrocluster.jobs.submit import SubmitOptions, submit_job
from pyrocluster.nameserver import registry
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


@pytest.mark.timeout(60)
def test_a_registered_worker_that_never_answers_holds_no_job_back(
    nameserver: str, worker_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker whose host went silent stays registered until the name server's reaper forgets it
    # (10 minutes). A job needs one live worker per task and ask, not every worker's answer: it
    # runs as soon as the live one answered, not after the silent one's ping timed out.
    monkeypatch.setattr(preflight, "PING_TIMEOUT_S", 120.0)  # what waiting for it would cost
    worker_factory(1, "--services", "compute")
    silent = socket.create_server(("127.0.0.1", 0))  # takes connections, never answers a handshake
    try:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        settings = Settings.from_sources(ns=nameserver)
        ns = registry.connect(settings)
        try:
            uris = {s: f"PYRO:{registry.object_name('silent', s)}@{address}" for s in ("control", "crawl")}
            registry.register_worker(ns, "silent", uris, {"crawl": 4}, ())
        finally:
            ns._pyroRelease()
        job = tmp_path / "job.yaml"
        job.write_text("name: j\ntasks:\n  - {id: a, call: add, args: [1, 2]}\n")
        opts = SubmitOptions(job_file=str(job), out=str(tmp_path / "out.jsonl"), wait_s=10.0)
        summary = submit_job(settings, opts, threading.Event())
        assert summary.ok == 1
        silent.settimeout(10)
        silent.accept()[0].close()  # it was asked, and left unanswered
    finally:
        silent.close()
