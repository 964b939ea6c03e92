"""The simulation's fake workers (bench/sim_worker.py) answer the worker protocol v2 as a real worker does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrocluster import codec, config
from pyrocluster.auth import make_proxy
from pyrocluster.config import Settings
from pyrocluster.coordinator.cluster import Cluster
from pyrocluster.nameserver import registry
from tests.conftest import WorkerFactory, wait_for

REPO = Path(__file__).resolve().parents[2]
FAKES = 3


@pytest.fixture
def fakes(nameserver: str) -> Iterator[None]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.sim_worker",
            "--ns",
            nameserver,
            "--count",
            str(FAKES),
            "--prefix",
            "fake",
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ready "), "bench.sim_worker did not start"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def reply_of(uri: str, settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    proxy = make_proxy(uri, settings, timeout_s=10)
    try:
        return dict(proxy.run_batch(request))
    finally:
        proxy._pyroRelease()


def decoded(reply: dict[str, Any]) -> list[tuple[int, Any]]:
    """Kind and decoded value of each outcome."""
    out = []
    for kind, value, _ms in reply["outcomes"]:
        out.append((kind, None if value is None else codec.unpack(codec.as_bytes(value))))
    return out


def test_fakes_register_and_reply_like_a_real_worker(
    nameserver: str, worker_factory: WorkerFactory, fakes: None
) -> None:
    worker_factory(1, "--services", "compute", "--pool", "thread", "--concurrency", "1", "--name", "real")
    settings = Settings.from_sources(ns=nameserver)
    config.apply(settings)
    ns = registry.connect(settings)
    try:

        def listed() -> list[registry.WorkerEntry] | None:
            entries = registry.find_workers(ns)
            return entries if len(entries) == FAKES + 1 else None

        entries = wait_for(listed, 30, what="every worker listed")
    finally:
        ns._pyroRelease()
    real = next(e for e in entries if e.name == "real")
    fake = next(e for e in entries if e.name != "real")
    assert fake.slots == {"compute": 1, "control": 0} and real.slots["compute"] == 1
    assert {"add", "echo"} <= fake.tasks <= real.tasks  # the catalog is read from the registration
    request = {
        "from": "test-coordinator",
        "calls": [
            ["1", "add", codec.pack([[2, 3], {}]), 10.0, 0],
            ["2", "echo", codec.pack([[{1: "int key"}], {}]), 10.0, 0],
            ["3", "no_such_task", codec.pack([[], {}]), 10.0, 0],
        ],
    }
    real_reply, fake_reply = (
        reply_of(real.uris["compute"], settings, request),
        reply_of(fake.uris["compute"], settings, request),
    )
    assert set(fake_reply) == set(real_reply) == {"outcomes", "load"}
    assert set(fake_reply["load"]) == set(real_reply["load"])
    real_out, fake_out = decoded(real_reply), decoded(fake_reply)
    assert real_out[:2] == fake_out[:2] == [(0, 5), (0, {1: "int key"})]
    assert real_out[2][0] == fake_out[2][0]  # UNKNOWN_TASK on both
    # And the real coordinator uses them like real workers.
    with Cluster(nameserver) as cluster:
        wait_for(lambda: cluster.capacity("compute") >= FAKES + 1, 30, what="every worker usable")
        assert list(cluster.starmap("add", [(i, i) for i in range(500)])) == [2 * i for i in range(500)]
