"""``submit`` reaches the cluster while it loads the job file: a job that stops before using what
was reached (its file or its checks failed) reports its own error and leaves no connection open."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import psutil
import pytest

from pyrocluster import config
from pyrocluster.config import Settings
from pyrocluster.coordinator.channel import Channel
from pyrocluster.coordinator.cluster import Cluster
from pyrocluster.coordinator.links import AHEAD_CHANNELS
from pyrocluster.coordinator.preflight import look_up_live
from pyrocluster.errors import JobFileError
from pyrocluster.jobs.submit import SubmitOptions, submit_job
from tests.conftest import wait_for

CLUSTER_THREADS = ("dispatch", "discovery", "reach-cluster")


def cluster_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name in CLUSTER_THREADS)


@pytest.mark.parametrize(
    "text",
    [
        "tasks:\n  - args: [1, 2]\n",  # the file itself is wrong
        "tasks:\n  - call: frobnicate\n",  # no worker offers the task
    ],
)
def test_a_refused_job_closes_the_cluster_it_reached_meanwhile(
    tmp_path: Path, nameserver: str, worker_factory, text: str
) -> None:
    worker_factory(1, "--services", "compute")
    settings = Settings.from_sources(ns=nameserver)
    config.apply(settings)
    before = cluster_threads()
    job = tmp_path / "job.yaml"
    job.write_text(text)
    options = SubmitOptions(job_file=str(job), out=str(tmp_path / "out.jsonl"))
    with pytest.raises(JobFileError):
        submit_job(settings, options, threading.Event())
    wait_for(lambda: cluster_threads() <= before, 30, what="the reached cluster closed")
    assert not (tmp_path / "out.jsonl").exists()


def connections_to(port: int) -> int:
    """Established TCP connections of this process to a local port."""
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def test_the_reached_cluster_connects_to_its_workers_before_the_first_batch(
    nameserver: str, worker_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``open_channels`` (what ``submit`` calls while it loads the job file) connects the compute
    channels at once; the first calls use them instead of connecting, and closing drops them."""
    connected: Counter[str] = Counter()
    real_connect = Channel.connect

    def counted(channel: Channel) -> None:  # the real connect, counted per object URI
        real_connect(channel)
        connected[channel.uri] += 1

    monkeypatch.setattr(Channel, "connect", counted)
    worker_factory(2, "--services", "compute")
    settings = Settings.from_sources(ns=nameserver)
    wait_for(lambda: len(look_up_live(settings)) == 2, 30, what="2 live workers")
    computes = [e.uris["compute"] for e in look_up_live(settings)]
    ports = {int(uri.rpartition(":")[2]) for uri in computes}
    cluster = Cluster(settings=settings)
    try:
        assert all(connected[uri] == 0 for uri in computes)
        cluster.open_channels("compute")
        wait_for(
            lambda: all(connected[uri] == AHEAD_CHANNELS for uri in computes),
            30,
            what=f"{AHEAD_CHANNELS} connections to each worker's compute service",
        )
        for i in range(4):  # one call at a time: each takes a channel made ahead, none connects
            assert cluster.submit("add", i, i).result(timeout=30) == 2 * i
        assert all(connected[uri] == AHEAD_CHANNELS for uri in computes), connected
    finally:
        cluster.close()
    wait_for(lambda: all(connections_to(port) == 0 for port in ports), 30, what="connections closed")
