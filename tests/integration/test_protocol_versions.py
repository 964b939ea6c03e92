"""Two releases on one cluster: a worker of another protocol version is shown and never used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrocluster import Cluster
from pyrocluster.nameserver.registry import PROTOCOL_VERSION
from tests.conftest import HERE, run_cli

OTHER_RELEASE = str(HERE / "helpers" / "other_release.py")
OTHER = PROTOCOL_VERSION + 1


@pytest.fixture
def other_worker(nameserver: str) -> Iterator[subprocess.Popen[str]]:
    """A worker announcing protocol OTHER, otherwise this very code."""
    proc = subprocess.Popen(
        [sys.executable, OTHER_RELEASE, str(OTHER), "worker", "--ns", nameserver, "--name", "other"]
        + ["--pool", "thread", "--concurrency", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYROCLUSTER_SECRET": "", "PYROCLUSTER_CONFIG": ""},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert " ready" in line, line
    yield proc
    proc.terminate()
    proc.wait(timeout=20)
    proc.stdout.close()


def test_a_worker_of_another_version_is_shown_incompatible_and_gets_no_work(
    nameserver: str, other_worker: subprocess.Popen[str], worker_factory, tmp_path: Path
) -> None:
    job = tmp_path / "v.yaml"
    job.write_text("name: v\ntasks:\n  - id: e\n    call: echo\n    map: [1, 2, 3]\n")
    alone = run_cli("submit", str(job), "--ns", nameserver, "--wait", "1", "--json", cwd=tmp_path)
    assert alone.returncode == 3 and "no live worker offers compute" in alone.stderr, alone

    worker_factory(1, "--name", "current", "--pool", "thread", "--concurrency", "2")
    with Cluster(nameserver, wait=10) as cluster:
        assert list(cluster.map("echo", range(60))) == list(range(60))
        job.write_text(
            "name: v\ntasks:\n  - id: e\n    call: echo\n    map: " + json.dumps(list(range(40))) + "\n"
        )
        done = run_cli("submit", str(job), "--ns", nameserver, "--json", "--quiet", cwd=tmp_path)
        assert done.returncode == 0, done
        records = [json.loads(line) for line in (tmp_path / "v.results.jsonl").read_text().splitlines()]
        assert {r["worker"] for r in records} == {"current"}

    status = run_cli("status", "--ns", nameserver, "--json")
    workers = {w["name"]: w for w in json.loads(status.stdout)["workers"]}
    assert (workers["other"]["state"], workers["other"]["protocol"]) == ("incompatible", OTHER)
    assert workers["other"]["done"] == 0
    assert (workers["current"]["state"], workers["current"]["protocol"]) == ("ready", PROTOCOL_VERSION)
    assert workers["current"]["done"] == 100
    table = run_cli("status", "--ns", nameserver)
    assert f"incompatible v{OTHER}" in table.stdout, table.stdout
