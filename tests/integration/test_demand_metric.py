"""``pyrocluster_calls_waiting``: the work a running job holds that no worker has taken, on /metrics."""

from __future__ import annotations

import re
import signal
import urllib.request
from pathlib import Path

from pyrocluster.local import ManagedProcess
from tests.conftest import Processes, start_submit, wait_for

CLEAN = {"PYROCLUSTER_SECRET": "", "PYROCLUSTER_SECRET_FILE": "", "PYROCLUSTER_CONFIG": ""}


def waiting(dashboard: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{dashboard}metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^pyrocluster_calls_waiting\{service="(\w+)"\} (\S+)$', text, re.M)
    }


def test_calls_waiting_rises_with_a_backlog_and_falls_to_zero(
    nameserver: str, worker_factory, processes: Processes, tmp_path: Path
) -> None:
    worker_factory(1, "--pool", "thread", "--concurrency", "1")
    dashboard = processes.add(ManagedProcess(["dashboard", "--ns", nameserver, "--port", "0"], env=CLEAN))
    url = dashboard.wait_ready().split()[-1]
    assert waiting(url) == {"compute": 0.0, "crawl": 0.0}
    job = tmp_path / "backlog.yaml"
    job.write_text("name: backlog\ntasks:\n  - id: nap\n    call: sleep\n    map: " + str([0.2] * 60) + "\n")
    submit = start_submit(job, nameserver, tmp_path, "--quiet")
    try:
        seen = wait_for(lambda: (w := waiting(url))["compute"] >= 20 and w, 30, what="a backlog on /metrics")
        assert seen["crawl"] == 0
        submit.send_signal(signal.SIGTERM)
        assert submit.wait(timeout=30) == 130
    finally:
        if submit.poll() is None:
            submit.kill()
        submit.communicate(timeout=10)
    wait_for(lambda: waiting(url)["compute"] == 0, 30, what="no backlog once the job ended")
