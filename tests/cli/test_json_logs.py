"""``--log-format json``: every line a worker and ``submit`` write to stderr is one JSON record."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import wait_for

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
ENV = {**os.environ, "PYROCLUSTER_CONFIG": "", "PYROCLUSTER_LOG_FORMAT": ""}


def start(args: list[str], stderr: Path, cwd: Path) -> subprocess.Popen[str]:
    with stderr.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "pyrocluster", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            env=ENV,
            cwd=cwd,
        )


def records(path: Path) -> list[dict[str, Any]]:
    """Every stderr line as a JSON object with the four fields every record has."""
    lines = path.read_text().splitlines()
    docs = [json.loads(line) for line in lines]  # raises on the first line that is not JSON
    for doc in docs:
        assert {"ts", "level", "logger", "msg"} <= doc.keys(), doc
        assert RFC3339_UTC.match(doc["ts"]), doc
    return docs


def test_every_stderr_line_of_a_worker_and_of_submit_is_json(nameserver: str, tmp_path: Path) -> None:
    worker_err, submit_err = tmp_path / "worker.err", tmp_path / "submit.err"
    worker = start(
        [
            "worker",
            "--ns",
            nameserver,
            "--name",
            "jw",
            "--pool",
            "thread",
            "--concurrency",
            "2",
            "--log-format",
            "json",
        ],
        worker_err,
        tmp_path,
    )
    submit = None
    try:
        assert worker.stdout is not None
        assert " ready" in worker.stdout.readline()
        job = tmp_path / "jl.yaml"
        job.write_text(
            "name: jl\ntasks:\n  - id: boom\n    call: fail\n    map: [a, b, c]\n"
            "  - id: nap\n    call: sleep\n    args: [30]\n"
        )
        submit = start(
            ["submit", str(job), "--ns", nameserver, "--log-format", "json", "--quiet"], submit_err, tmp_path
        )
        results = tmp_path / "jl.results.jsonl"
        wait_for(
            lambda: results.exists() and results.read_text().count('"failed"') >= 3, 30, what="3 failures"
        )
        submit.send_signal(signal.SIGTERM)
        assert submit.wait(timeout=30) == 130
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        for proc in (worker, submit):
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                proc.stdout.close()  # type: ignore[union-attr]

    from_worker = records(worker_err)
    assert len(from_worker) >= 4, from_worker  # three failed calls and the drain, at least
    assert all(doc.get("worker") == "jw" for doc in from_worker), from_worker
    assert any("drain" in doc["msg"] for doc in from_worker), from_worker
    from_submit = records(submit_err)
    assert any("cancelling" in doc["msg"] for doc in from_submit), from_submit
    assert all(doc.get("job") == "jl" for doc in from_submit), from_submit
