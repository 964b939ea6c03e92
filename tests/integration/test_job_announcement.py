"""A running job is listed in the name server, and leaves it listed as finished: the leaving
starts when asked (while the job closes its results file) and is over once the job's block ends."""

from __future__ import annotations

from typing import Any

from pyrocluster.config import Settings
from pyrocluster.jobs.announce import Announcement
from pyrocluster.nameserver import finished, registry
from tests.conftest import wait_for

SNAPSHOT = {"name": "tick", "done": 3, "total": 3, "ok": 3, "failed": 0, "rate": 1.0}


def listings(settings: Settings) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The running jobs and the finished ones, as the name server lists them now."""
    ns = registry.connect(settings)
    try:
        return registry.find_jobs(ns), finished.find_finished(ns)
    finally:
        ns._pyroRelease()


def test_a_job_leaves_when_asked_and_is_listed_finished(nameserver: str) -> None:
    settings = Settings.from_sources(ns=nameserver)
    with Announcement(settings, "tick", lambda: dict(SNAPSHOT)) as announcement:
        wait_for(lambda: any(k.startswith("tick@") for k in listings(settings)[0]), 10, what="listed running")
        announcement.finish(dict(SNAPSHOT))
        announcement.leave()

        def left() -> bool:
            running, ended = listings(settings)
            return not running and any(e["name"] == "tick" and e["state"] == "finished" for e in ended)

        wait_for(left, 10, what="listed finished, before the block ends")
    running, ended = listings(settings)
    assert not running and [e["done"] for e in ended if e["name"] == "tick"] == [3]


def test_a_job_that_does_not_ask_leaves_as_its_block_ends(nameserver: str) -> None:
    settings = Settings.from_sources(ns=nameserver)
    with Announcement(settings, "tock", lambda: dict(SNAPSHOT, name="tock")) as announcement:
        wait_for(lambda: any(k.startswith("tock@") for k in listings(settings)[0]), 10, what="listed running")
        announcement.finish(dict(SNAPSHOT, name="tock"), cancelled=True)
    running, ended = listings(settings)
    assert not running and [e["state"] for e in ended if e["name"] == "tock"] == ["cancelled"]
