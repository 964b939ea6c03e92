"""The dashboard's HTTP edges against real processes: actions on a worker that cannot answer, the
``?token=`` login redirect, WebSocket upgrades (none served), framing, a name holding a slash."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from pyrocluster.local import ManagedProcess, start_nameserver, start_worker
from pyrocluster.web.auth import dashboard_token
from tests.conftest import Processes, wait_for
from tests.helpers.roles import secret_env
from tests.web.helpers import get, start_dashboard

pytestmark = pytest.mark.timeout(90)


def dashboard_over(
    processes: Processes, env: dict[str, str], worker: str | None = None
) -> tuple[ManagedProcess | None, ManagedProcess, str]:
    """A name server, a thread-slot worker named ``worker`` (if any) and a dashboard, all with
    ``env``: the worker's process, the dashboard's and the dashboard's URL."""
    ns_proc, ns = start_nameserver(env=env)
    processes.add(ns_proc)
    proc = None
    if worker is not None:
        args = ["--name", worker, "--services", "compute", "--pool", "thread"]
        proc = processes.add(start_worker(ns, args, env=env))
    dash, url = start_dashboard(processes, ns, env=env)
    return proc, dash, url


SECRET = "dashboard-edges-secret"
NO_SECRET_ENV = {"PYROCLUSTER_SECRET": "", "PYROCLUSTER_SECRET_FILE": ""}
ACT = {"X-Requested-By": "pyrocluster"}
ACTIONS_AT_ONCE = 50
"""More than the threads Starlette's default pool has (40)."""
PAGE_LIMIT_S = 2.0
"""How long the page may take while actions wait on a frozen worker (each waits 5 s)."""


def test_actions_on_a_frozen_worker_are_json_503s_and_the_page_keeps_answering(
    processes: Processes,
) -> None:
    worker, dash, url = dashboard_over(processes, NO_SECRET_ENV, "frozen")
    assert worker is not None
    worker.signal(signal.SIGSTOP)  # registered, but answers nothing (stop() sends SIGCONT)
    response = httpx.post(f"{url}api/workers/frozen/drain", headers=ACT, timeout=30)
    assert response.status_code == 503, response.text
    assert "'frozen' did not answer" in response.json()["error"]

    async def many_actions() -> tuple[list[httpx.Response], dict[str, float]]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as client:
            acting = [
                asyncio.create_task(client.post(f"{url}api/workers/frozen/drain", headers=ACT))
                for _ in range(ACTIONS_AT_ONCE)
            ]
            await asyncio.sleep(0.5)  # they now wait on the frozen worker
            took = {}
            for path in ("", "static/dashboard.js", "api/dashboard"):
                started = time.monotonic()
                assert (await client.get(url + path)).status_code == 200, path
                took[path or "/"] = time.monotonic() - started
            worker.signal(signal.SIGCONT)  # the actions still waiting can now be answered
            return await asyncio.gather(*acting), took

    responses, took = asyncio.run(many_actions())
    assert max(took.values()) < PAGE_LIMIT_S, took
    assert {r.status_code for r in responses} <= {200, 503}, {r.status_code for r in responses}
    assert not any("Traceback" in line for line in dash.output)


def test_the_token_login_redirects_only_within_the_dashboard(processes: Processes) -> None:
    _, _, url = dashboard_over(processes, secret_env(SECRET))
    token = dashboard_token(SECRET.encode())
    for path in ("//evil.example/", "/%2F%2Fevil.example/x", "///evil.example"):
        response = get(url, f"{path}?token={token}")
        assert response.status_code == 303, path
        location = response.headers["location"]
        assert location.startswith("/") and not location.startswith("//"), (path, location)


@pytest.mark.parametrize("secret", [SECRET, ""])
def test_a_websocket_upgrade_is_refused_without_a_traceback(processes: Processes, secret: str) -> None:
    _, dash, url = dashboard_over(processes, secret_env(secret) if secret else NO_SECRET_ENV)
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    for path in ("/static/dashboard.js", "/api/status", "/"):
        response = get(url, path, headers=upgrade)
        assert response.status_code in (401, 403), (path, response.status_code)
    # the dashboard still serves, and logged nothing about the upgrades
    wait_for(lambda: get(url, "/livez").status_code == 200, 10, what="the dashboard answering")
    assert not any("Traceback" in line or "Error" in line for line in dash.output), list(dash.output)


def test_the_page_may_not_be_framed_by_another_site(processes: Processes) -> None:
    # Without a secret the page acts for whoever sees it: framed by another site, a visitor could
    # be tricked into clicking its buttons (clickjacking).
    _, _, url = dashboard_over(processes, NO_SECRET_ENV)
    page = get(url, "/")
    assert page.status_code == 200
    assert page.headers.get("x-frame-options") == "DENY"
    assert "frame-ancestors 'none'" in page.headers.get("content-security-policy", "")


def test_a_worker_whose_name_holds_a_slash_is_drained_by_its_url_encoded_name(
    processes: Processes,
) -> None:
    _, _, url = dashboard_over(processes, NO_SECRET_ENV, "rack/1")
    drained = httpx.post(f"{url}api/workers/rack%2F1/drain", headers=ACT, timeout=30)
    assert drained.status_code == 200, drained.text
    assert drained.json() == {"action": "drain", "worker": "rack/1", "changed": True}

    def state() -> str:
        workers = get(url, "/api/status").json()["workers"]
        return workers[0]["state"] if workers else ""

    wait_for(lambda: state() == "draining", 10, what="the worker shown draining")
