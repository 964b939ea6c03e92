"""``status`` when the name server refuses our credential, and a job whose token is revoked while it
runs: the JSON tells a refusal from an absence, and the lost job keeps the counts it last published."""

from __future__ import annotations

import io
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from rich.console import Console

from pyrocluster.config import Settings
from pyrocluster.coordinator.status import cluster_status, list_cluster, unreachable_status
from pyrocluster.errors import AuthenticationError, ClusterUnreachable
from pyrocluster.render import status_view
from tests.conftest import Processes, run_cli, wait_for
from tests.helpers.roles import secret_env, token_env
from tests.integration.test_roles import (
    SECRET_ENV,
    Secured,
    late_job,
    only_error_line,
    start_submit,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def secured(processes: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Secured:
    monkeypatch.chdir(tmp_path)
    return Secured(processes, tmp_path)


def status_json(
    secured: Secured, env: dict[str, str], *args: str
) -> tuple[dict, subprocess.CompletedProcess[str]]:
    result = run_cli("status", "--json", "--ns", secured.ns, *args, env=env, cwd=secured.cwd)
    return json.loads(result.stdout), result


def first_watch_line(ns: str, env: dict[str, str], timeout_s: float = 60) -> dict:
    """The first document ``status --json --watch`` prints; the process is stopped whatever happens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyrocluster", "status", "--ns", ns, "--json", "--watch", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **env},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
    try:
        return json.loads(lines.get(timeout=timeout_s))
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_status_json_says_a_name_server_that_refuses_us_is_reachable_and_why(secured: Secured) -> None:
    wrong = secret_env("not-the-secret")
    doc, result = status_json(secured, wrong)
    assert result.returncode == 3, result
    line = only_error_line(result)
    assert doc["nameserver"] == {"address": secured.ns, "reachable": True, "error": line[len("error: ") :]}
    assert "refused" in doc["nameserver"]["error"]
    assert doc["workers"] == [] and doc["jobs"] == [] and doc["schedules"] == []
    watched = first_watch_line(secured.ns, wrong)
    assert watched["nameserver"]["reachable"] is True and "refused" in watched["nameserver"]["error"]

    token = secured.issue_here("gone", "viewer")
    assert secured.cli(None, "token", "revoke", "gone").returncode == 0
    doc, result = status_json(secured, token_env(token))
    assert result.returncode == 3 and "revoked" in only_error_line(result), result
    assert doc["nameserver"]["reachable"] is True and "revoked" in doc["nameserver"]["error"], doc

    fine, result = status_json(secured, SECRET_ENV)  # the secret: as the SPEC shows it, no error key
    assert result.returncode == 0 and fine["nameserver"] == {"address": secured.ns, "reachable": True}


def test_status_json_says_an_absent_name_server_is_unreachable_and_why() -> None:
    result = run_cli("status", "--json", "--ns", "127.0.0.1:1", env=SECRET_ENV)
    assert result.returncode == 3, result
    nameserver = json.loads(result.stdout)["nameserver"]
    assert (
        nameserver["reachable"] is False and nameserver["error"] == only_error_line(result)[len("error: ") :]
    )
    watched = first_watch_line("127.0.0.1:1", SECRET_ENV)
    assert watched["nameserver"]["reachable"] is False and "cannot reach" in watched["nameserver"]["error"]


def test_the_status_table_shows_a_refusal_as_reachable_with_its_reason() -> None:
    settings = Settings().with_ns("127.0.0.1:9")
    refused = status_view(
        unreachable_status(settings, AuthenticationError("token 'x' was revoked")), width=200
    )
    absent = status_view(unreachable_status(settings, ClusterUnreachable("cannot reach it")), width=200)

    def cells(view: object) -> list[str]:
        """The name server row's cells."""
        console = Console(width=200, file=io.StringIO())
        console.print(view)
        (row,) = [line for line in console.file.getvalue().splitlines() if "127.0.0.1:9" in line]  # type: ignore[attr-defined]
        return [cell.strip() for cell in row.strip("│ ").split("│")]

    assert cells(refused) == ["127.0.0.1:9", "yes", "token 'x' was revoked"]
    assert cells(absent) == ["127.0.0.1:9", "no", "cannot reach it"]


def test_a_job_whose_token_is_revoked_is_lost_with_its_last_published_counts(
    secured: Secured, tmp_path: Path
) -> None:
    carol = secured.issue_here("carol", "submitter")
    gate, job = late_job(tmp_path, "  - {id: q, call: add, args: [1, 1]}\n")
    submit = start_submit(secured, carol, job)
    try:
        settings = secured.settings(None)

        def published() -> list[dict]:
            return list(list_cluster(settings).published.values())

        wait_for(lambda: published() and published()[0]["done"] == 1, 30, what="the job publishes 1 done")
        assert published() == [{"done": 1, "total": 3, "failed": 0, "cancelled": 0}]
        secured.revoke_until_refused("carol", carol)
        gate.write_text("go")
        code = submit.wait(timeout=60)
        assert code == 3, submit.communicate()
    finally:
        if submit.poll() is None:
            submit.kill()
        submit.communicate()
    # The job could neither update nor remove its registration after the revocation: it is lost,
    # with the counts it last published, not 0/0.
    (shown,) = cluster_status(settings)["jobs"]
    assert shown["state"] == "lost" and (shown["done"], shown["total"]) == (1, 3), shown
    doc, result = status_json(secured, SECRET_ENV)
    assert result.returncode == 0, result
    (listed,) = doc["jobs"]
    assert listed["state"] == "lost" and (listed["done"], listed["total"], listed["failed"]) == (1, 3, 0)
    table = run_cli("status", "--ns", secured.ns, env=SECRET_ENV, cwd=secured.cwd)
    (row,) = [line for line in table.stdout.splitlines() if listed["id"][:20] in line]
    assert "lost" in row and "1/3" in row, table.stdout
