"""The link reports every batch it was given, even when it cannot make a proxy (no sockets)."""

from __future__ import annotations

import threading
from typing import Any

import Pyro5.errors

from pyrocluster.config import Settings
from pyrocluster.coordinator import channel
from pyrocluster.coordinator.calls import Batch, Call
from pyrocluster.coordinator.links import PROBE_TICK_S, Transport, Unsent, WorkerLink
from pyrocluster.coordinator.policy import Happened
from pyrocluster.defaults import PROBE_INTERVAL_S
from pyrocluster.nameserver.registry import WorkerEntry


class Owner:
    sender_id = "test"

    def __init__(self) -> None:
        self.failed: list[Happened] = []
        self.reported = threading.Event()

    def batch_failed(self, link: Any, batch: Batch, happened: Happened, detail: str) -> None:
        self.failed.append(happened)
        self.reported.set()

    def batch_replied(self, *args: Any) -> None:
        raise AssertionError("no reply expected")

    def probe_wait(self, link: Any, now: float) -> float | None:
        return None  # no probing in this test

    def holds(self, link: Any, batch_ids: set[int]) -> bool:
        return False


def test_a_failing_make_proxy_reports_the_batch_as_never_sent(monkeypatch):
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError("tls.key")

    monkeypatch.setattr(channel, "make_proxy", broken)  # what every channel connects with
    owner = Owner()
    entry = WorkerEntry(
        "w", {"compute": "PYRO:c@127.0.0.1:1", "control": "PYRO:k@127.0.0.1:1"}, {"compute": 1}
    )
    link = WorkerLink(entry, owner, Settings(), 1.0)
    call = Call("compute", "add", [1, 2], {}, frozenset(), 10.0, 1, False)
    try:
        link.send(Batch(call.requirement, [call]))
        assert owner.reported.wait(10), "the batch was never reported: it would stay in flight for ever"
        assert owner.failed == [Happened.REFUSED]
    finally:
        link.stop()


class IdleOwner(Owner):
    """Holds no work on any worker: each link only asks again in a probe interval."""

    def probe_wait(self, link: Any, now: float) -> float | None:
        return PROBE_INTERVAL_S


def test_links_due_at_scattered_moments_share_the_probers_wake_ups():
    # Every worker that held work was last probed at its own moment; idle or busy, each link then
    # looks again a probe interval after its own moment. The prober wakes for each distinct time
    # and scans every link, so scattered times cost O(workers) wake-ups a second of O(workers) each.
    transport = Transport()
    transport.close()  # its prober thread must not look at the links with the real clock meanwhile
    uris = {"compute": "PYRO:c@127.0.0.1:1", "control": "PYRO:k@127.0.0.1:1"}
    links = [
        WorkerLink(WorkerEntry(f"w{i}", uris, {"compute": 1}), IdleOwner(), Settings(), 1.0, transport)
        for i in range(200)
    ]
    try:
        start = 5000.0
        times = {link.next_probe(start + i / len(links)) for i, link in enumerate(links)}
        assert len(times) <= round(PROBE_INTERVAL_S / PROBE_TICK_S) + 1, len(times)
        for i, link in enumerate(links):  # never earlier than asked, and late by less than a tick
            due = start + i / len(links) + PROBE_INTERVAL_S
            assert due <= link.next_probe(start) < due + PROBE_TICK_S
    finally:
        for link in links:
            link.stop()


class ProbedOwner(IdleOwner):
    """Records what each probe's end told it."""

    def __init__(self) -> None:
        super().__init__()
        self.probes: list[str] = []

    def probe_answered(self, link: Any, load: Any) -> None:
        self.probes.append("answered")

    def probe_failed(self, link: Any, reason: str) -> None:
        self.probes.append("failed")


def test_a_probe_refused_because_our_token_lapsed_keeps_the_worker_and_its_calls():
    # The worker answered: it refuses a token revoked (or expired) since we connected. Setting it
    # aside would fail its calls under way over to workers that refuse them too, and a task that
    # runs to its end there would be recorded as WorkerUnavailable instead of its result.
    owner = ProbedOwner()
    uris = {"compute": "PYRO:c@127.0.0.1:1", "control": "PYRO:k@127.0.0.1:1"}
    transport = Transport()
    link = WorkerLink(WorkerEntry("w", uris, {"compute": 1}), owner, Settings(), 1.0, transport)
    try:
        link._probed(None, Pyro5.errors.SecurityError("refused: token 'carol' was revoked"))
        link._probed(None, Unsent("127.0.0.1:1 refused the connection: token 'carol' expired"))
        assert owner.probes == ["answered", "answered"]
        link._probed(None, Pyro5.errors.CommunicationError("connection lost"))
        assert owner.probes[-1] == "failed"
    finally:
        link.stop()
        transport.close()
