"""Replies no real worker sends, from a real (fake) worker: each call ends, none hangs (SPEC 5.7, 9).

The fake worker (``tests/helpers/fakeworker.py``) is a real Pyro5 daemon registered in a real name
server; the coordinator is a real ``Cluster``. What it answers is pinned from fuzzing: an
unhashable outcome kind, an elapsed time no float holds, an outcome nested 1,000 deep, and a
batch it never answers while it answers every liveness probe.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from pyrocluster.coordinator.cluster import Cluster
from pyrocluster.errors import TaskFailed, WorkerUnavailable
from tests.helpers.fakeworker import FakeWorker

pytestmark = pytest.mark.timeout(60)


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


PINNED = {
    "unhashable kind": [[0], None, 1.0],
    "elapsed 10**400": [0, None, 10**400],
    "nested 1,000 deep": nested(1000),
}


@pytest.fixture
def cluster(nameserver: str) -> Iterator[Cluster]:
    c = Cluster(nameserver, timeout=0.5, retries=0, probe_timeout=1.0, wait=20)
    yield c
    c.close()


@pytest.mark.parametrize("case", list(PINNED))
def test_an_undecodable_outcome_ends_its_call_with_decode_error(
    nameserver: str, cluster: Cluster, case: str
) -> None:
    fake = FakeWorker(nameserver, "fake", lambda request: {"outcomes": [PINNED[case]], "load": {}})
    try:
        future = cluster.submit("echo", 1)
        with pytest.raises(TaskFailed) as failed:
            future.result(timeout=15)
        assert failed.value.type == "DecodeError", failed.value
        assert cluster.in_flight() == 0  # the batch is retired: nothing waits for it
    finally:
        fake.close()


def test_a_batch_never_answered_by_a_worker_that_answers_its_probes_times_out(
    nameserver: str, cluster: Cluster
) -> None:
    fake = FakeWorker(nameserver, "fake", lambda request: {"outcomes": [[0, None, 1.0]], "load": {}})
    fake.hang.set()
    cluster._dispatcher.batch_grace_s = 0.5  # the deadline: 0.5 s timeout + 1 s kill allowance + 0.5 s
    try:
        start = time.monotonic()
        future = cluster.submit("echo", 1)
        with pytest.raises(WorkerUnavailable, match="no reply to a batch within its deadline"):
            future.result(timeout=20)
        assert time.monotonic() - start < 2.0 + 3.0  # its deadline, plus the dispatcher's check
        assert cluster.in_flight() == 0
    finally:
        fake.close()
