"""The name server dies mid-job: the job goes on with the workers it knows; a restart heals the cluster.

Hosts in network namespaces: the name server, three workers (``--heartbeat 1``) and the
coordinator (``pyrocluster submit``). The name server is SIGKILLed while the job runs, then
started again on the same address: the workers must be registered again within two heartbeats,
and a worker that starts afterwards must be discovered by the job that is still running.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import TASKS_FILE
from tests.netns import Network, read_results, require_netns, wait_until, write_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

HEARTBEAT_S = 1.0
TASK_S = 0.1
"""Seconds each task sleeps (``interval``)."""
TASKS = 1100
"""About 11 s of work: the job is still running when the late worker joins."""
OUTAGE_S = 2.5
"""How long the name server stays dead: more than two heartbeats and two discovery rounds."""
WORKER_ARGS = (
    *f"--services compute --pool thread --concurrency 4 --heartbeat {HEARTBEAT_S:g}".split(),
    "--tasks",
    TASKS_FILE,
)
WATCHER = str(Path(__file__).parents[1] / "netns.py")


@pytest.fixture
def net():
    require_netns()
    with Network(["ns", "w1", "w2", "w3", "coord"]) as network:
        yield network


def started(record: dict) -> float:
    """Wall-clock time an ``interval`` call started on its worker."""
    return float(record["result"][1])


def test_job_survives_nameserver_loss_and_workers_reregister(net, tmp_path):
    nameserver = net.start_nameserver("ns")
    net.start_workers(("w1", "w2"), *WORKER_ARGS)
    job = write_job(tmp_path / "nsloss.yaml", "nsloss", "interval", [TASK_S] * TASKS)
    out = tmp_path / "nsloss.results.jsonl"
    submit, tail = net.submit(job, tmp_path)
    try:
        wait_until(lambda: len(tail.poll()) >= 40, 40, "the job is under way")

        # 1. The name server dies: the job goes on with the workers it knows.
        nameserver.kill()
        killed_at = time.time()
        time.sleep(OUTAGE_S)
        during = [r for r in tail.poll() if started(r) > killed_at]
        assert submit.running(), submit.output
        assert {r["worker"] for r in during} == {"w1", "w2"}, Counter(r["worker"] for r in during)
        assert len(during) >= 0.5 * OUTAGE_S * 8 / TASK_S, (
            f"only {len(during)} tasks while the name server was down"
        )

        # 2. It comes back on the same address: the workers re-register within two heartbeats.
        watcher = net["coord"].popen(
            [
                sys.executable,
                WATCHER,
                "watch-ns",
                "--ns",
                net.ns_address,
                "--expect",
                "w1,w2",
                "--timeout",
                "20",
            ],
            label="watch-ns",
        )
        net.start_nameserver("ns")
        assert watcher.wait(25) == 0, watcher.output
        events = {
            e["event"]: e for e in (json.loads(line) for _, line in watcher.lines if line.startswith("{"))
        }
        reappeared_s = events["registered"]["t"] - events["up"]["t"]
        assert reappeared_s <= 2 * HEARTBEAT_S, (
            f"workers re-registered {reappeared_s:.2f} s after the restart"
        )

        # 3. A worker that starts now is discovered by the running job and gets work.
        joined = net.start_worker("w3", *WORKER_ARGS)
        late = wait_until(
            lambda: [r for r in tail.poll() if r["worker"] == "w3"], 20, "w3 gets work from the job"
        )
        assert submit.running(), "the job ended before the late worker could join: make it longer"
        assert submit.wait(90) == 0, submit.output
        raw = tail.poll()
    finally:
        tail.close()
    summary = json.loads(next(line for _, line in reversed(submit.lines) if line.startswith("{")))

    final = read_results(out)
    assert len(final) == TASKS and {r["id"] for r in final} == {f"nsloss-{k}" for k in range(TASKS)}
    assert all(r["status"] == "ok" for r in final)
    assert not [i for i, n in Counter(r["id"] for r in raw).items() if n > 1], "a task was recorded twice"
    assert summary["ok"] == TASKS and summary["failed"] == 0
    first_late = min(started(r) for r in late) - joined.ready_at
    print(
        f"\nname-server figures: {len(during)} tasks done during the {OUTAGE_S:g} s outage; "
        f"workers re-registered {reappeared_s:.2f} s after the restart (heartbeat {HEARTBEAT_S:g} s); "
        f"the late worker got work {first_late:.2f} s after its ready line; "
        f"job {summary['wall_s']:.1f} s, retried {summary['retried']}"
    )
