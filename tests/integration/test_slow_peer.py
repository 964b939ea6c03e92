"""A slow peer slows only itself (SPEC 5.7): a worker whose replies stall or drip, behind a real relay.

Two real workers register in the cluster's name server. The coordinator under test looks its
workers up in a second, real name server (the "directory") where the test lists worker ``wa``
as it is and worker ``wb`` at the address of a TCP relay (``tests/helpers/relay.py``) in front
of it. So every byte between the coordinator and ``wb`` goes through the relay, which the test
then turns slow: it passes the first bytes of each reply and stops, or drips a byte a second.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrocluster.config import Settings
from pyrocluster.coordinator.cluster import Cluster
from pyrocluster.defaults import PROBE_INTERVAL_S
from pyrocluster.local import start_nameserver
from pyrocluster.nameserver import registry
from tests.conftest import TASKS_FILE, Processes, WorkerFactory, wait_for
from tests.helpers.relay import Relay

pytestmark = pytest.mark.timeout(90)

PROBE_TIMEOUT_S = 1.0
SLEEP_S = 0.1
"""The healthy calls' task: longer than a caller reads its own reply, so the loop reads it."""
SLACK_S = 0.1
"""SPEC 5.7: a slow peer delays no call on another worker by more than this."""
LOADED_SLACK_S = 0.4
"""What a single call may lose on a loaded 2-core CI machine (-n 2, other tests' workers) over
the slowest call of its own baseline; the defect this guards against costs seconds (a reply
loop held for the 5 s socket timeout, or for the whole of a dripping reply)."""


def entry_of(ns: str, name: str) -> registry.WorkerEntry:
    proxy = registry.connect(Settings.from_sources(ns=ns))
    try:
        return next(w for w in registry.find_workers(proxy) if w.name == name)
    finally:
        proxy._pyroRelease()


def list_in(directory: str, entry: registry.WorkerEntry, uris: dict[str, str], tags: set[str]) -> None:
    """Register ``entry`` in the directory name server at ``uris`` with ``tags``."""
    proxy = registry.connect(Settings.from_sources(ns=directory))
    try:
        registry.register_worker(proxy, entry.name, uris, entry.slots, tags, entry.tasks)
    finally:
        proxy._pyroRelease()


@pytest.fixture
def slow_pair(worker_factory: WorkerFactory, nameserver: str, processes: Processes) -> Iterator[tuple]:
    """``(cluster, relay, directory, entry of wa)``: wb (2 thread slots) listed behind the relay only."""
    worker_factory(1, "--name", "wa", "--pool", "thread", "--concurrency", "2", "--tasks", TASKS_FILE)
    worker_factory(1, "--name", "wb", "--pool", "thread", "--concurrency", "2", "--tasks", TASKS_FILE)
    wa, wb = entry_of(nameserver, "wa"), entry_of(nameserver, "wb")
    host, _, port = wb.address.rpartition(":")
    relay = Relay(host, int(port))
    proc, directory = start_nameserver()
    processes.add(proc)
    relayed = {s: uri.replace(wb.address, relay.address()) for s, uri in wb.uris.items()}
    list_in(directory, wb, relayed, set())
    cluster = Cluster(directory, probe_timeout=PROBE_TIMEOUT_S, timeout=20, retries=2, wait=30)
    try:
        yield cluster, relay, directory, wa
    finally:
        cluster.close()
        relay.close()


def healthy_call_times(cluster: Cluster, n: int) -> list[float]:
    """Seconds each of ``n`` calls in a row on ``wa`` took (tag ``healthy``, which only it carries)."""
    on_wa = cluster.options(tags=["healthy"])
    took = []
    for _ in range(n):
        start = time.monotonic()
        future = on_wa.submit("sleep", SLEEP_S)
        assert future.result(timeout=30) == SLEEP_S and future.worker == "wa"
        took.append(time.monotonic() - start)
    return took


@pytest.mark.parametrize("slow", ["stall", "drip"])
def test_a_worker_whose_replies_stall_or_drip_delays_no_call_on_another(
    slow_pair: tuple, tmp_path: Path, slow: str
) -> None:
    cluster, relay, directory, wa = slow_pair
    release = tmp_path / "release"
    # Two calls that end when the test says, held by wb: the only worker listed so far.
    held = [cluster.submit("hold", str(release)) for _ in range(2)]
    wait_for(lambda: cluster.in_flight() == 2, 15, what="both calls on wb")
    list_in(directory, wa, dict(wa.uris), {"healthy"})
    wait_for(lambda: cluster.capacity("compute") == 4, 15, what="wa known to the coordinator")
    baseline = healthy_call_times(cluster, 10)

    if slow == "stall":
        relay.stall(first_bytes=8)  # a piece of each reply's header, then nothing
    else:
        relay.drip(1.0)
    finished: list[float] = []
    for future in held:
        future.add_done_callback(lambda _: finished.append(time.monotonic()))
    slowed_at = time.monotonic()
    release.touch()  # wb answers now: its replies (and its probes' replies) get stuck in the relay
    during: list[float] = []
    while not all(f.done() for f in held) or time.monotonic() - slowed_at < 3.0:
        during += healthy_call_times(cluster, 1)
        assert time.monotonic() - slowed_at < 20, "wb's calls never failed over"
    failed_over_after = max(finished) - slowed_at

    assert [f.result() for f in held] == [str(release)] * 2
    assert {f.worker for f in held} == {"wa"}  # wb was set aside by its probe; wa ran them again
    # Failover by the probe deadline: the next probe starts within an interval and times out.
    assert failed_over_after < PROBE_INTERVAL_S + PROBE_TIMEOUT_S + 2.0, failed_over_after
    normal, worst = statistics.median(baseline), max(baseline)
    report = f"baseline {[round(t, 3) for t in baseline]}, during {[round(t, 3) for t in during]}"
    assert statistics.median(during) <= normal + SLACK_S, report
    assert max(during) <= worst + LOADED_SLACK_S, report
