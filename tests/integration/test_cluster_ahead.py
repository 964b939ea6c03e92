"""``submit`` reaches the cluster while it loads the job file: a job that stops before using what
was reached (its file or its checks failed) reports its own error and leaves no connection open."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pyrocluster import config
from pyrocluster.config import Settings
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
