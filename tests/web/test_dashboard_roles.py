"""The dashboard's roles over real HTTP (SPEC 13): tokens, actions as POSTs, the Host check."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from pyrocluster import tokens
from pyrocluster.local import ManagedProcess, start_nameserver, start_worker
from pyrocluster.web.auth import dashboard_token
from tests.conftest import Processes, wait_for
from tests.helpers.roles import issue as issue_token
from tests.helpers.roles import secret_env
from tests.web.helpers import get, start_dashboard

SECRET = "dashboard-roles-secret"
SECRET_ENV = secret_env(SECRET)
WORKER = "dash-w1"


def issue(name: str, role: str) -> str:
    return issue_token(SECRET, name, role)


def post(url: str, path: str, **kw) -> httpx.Response:
    return httpx.post(url.rstrip("/") + path, timeout=10, follow_redirects=False, **kw)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(processes: Processes) -> tuple[str, str, ManagedProcess]:
    """A name server, a worker and a dashboard holding the secret: (name server, dashboard URL, worker)."""
    ns_proc, ns = start_nameserver(env=SECRET_ENV)
    processes.add(ns_proc)
    args = ["--name", WORKER, "--services", "compute", "--concurrency", "1", "--pool", "thread"]
    worker = processes.add(start_worker(ns, args, env=SECRET_ENV))
    _, url = start_dashboard(processes, ns, env=SECRET_ENV)
    return ns, url, worker


def worker_state(url: str, token: str) -> str:
    workers = get(url, "/api/status", headers=bearer(token)).json()["workers"]
    return workers[0]["state"] if workers else ""


def test_role_tokens_look_and_only_operators_act(secured, tmp_path: Path) -> None:
    _, url, worker = secured
    viewer, operator = issue("grafana", "viewer"), issue("oncall", "operator")
    assert get(url, "/api/status").status_code == 401
    assert get(url, "/metrics", headers=bearer(viewer)).status_code == 200
    wait_for(lambda: worker_state(url, viewer) == "ready", 10, what="the worker on the dashboard")
    data = get(url, "/api/dashboard", headers=bearer(viewer)).json()
    assert (data["role"], data["you"]) == ("viewer", "grafana")
    drain = f"/api/workers/{WORKER}/drain"
    refused = post(url, drain, headers=bearer(viewer))
    assert refused.status_code == 403
    assert refused.json()["error"] == "role viewer (grafana) may not drain workers (needs operator)"
    assert post(url, drain, headers=bearer(dashboard_token(SECRET.encode()))).status_code == 403
    # /?token= sets the cookie; the cookie reads but may not act
    login = get(url, f"/?token={operator}")
    assert login.status_code == 303 and login.headers["location"] == f"/#token={operator}"
    cookies = {"pyrocluster_token": login.cookies["pyrocluster_token"]}
    assert get(url, "/api/status", cookies=cookies).status_code == 200
    cookie_only = post(url, drain, cookies=cookies)
    assert cookie_only.status_code == 403 and "Authorization header" in cookie_only.text
    assert worker_state(url, viewer) == "ready"
    done = post(url, drain, headers=bearer(operator))
    assert done.status_code == 200, done.text
    assert done.json() == {"action": "drain", "worker": WORKER, "changed": True}
    wait_for(lambda: worker_state(url, viewer) == "draining", 10, what="the worker shown draining")
    assert post(url, f"/api/workers/{WORKER}/undrain", headers=bearer(operator)).status_code == 200
    wait_for(lambda: worker_state(url, viewer) == "ready", 10, what="the worker shown ready again")
    assert any("audit: drain by oncall role=operator" in line for line in worker.output)
    for path in ("/api/workers/nobody/drain", "/api/schedules/nosuch/pause", "/api/jobs/nosuch/cancel"):
        missing = post(url, path, headers=bearer(operator))
        assert missing.status_code == 404, (path, missing.text)
    other = tokens.issue(b"another cluster", "x", tokens.Role.OPERATOR, time.time(), 60)
    assert get(url, "/api/status", headers=bearer(other)).status_code == 401


def test_without_a_secret_a_foreign_host_is_refused(processes: Processes, nameserver: str) -> None:
    _, url = start_dashboard(
        processes, nameserver, env={"PYROCLUSTER_SECRET": "", "PYROCLUSTER_SECRET_FILE": ""}
    )
    port = url.rstrip("/").rpartition(":")[2]
    assert get(url, "/api/status").status_code == 200
    assert get(url, "/api/status", headers={"Host": f"localhost:{port}"}).status_code == 200
    for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1:{int(port) + 1}"):
        refused = get(url, "/api/status", headers={"Host": host})
        assert refused.status_code == 403 and "Host" in refused.text, host
    # a form of another site cannot set a header: an action without it is refused
    assert post(url, "/api/workers/nobody/drain").status_code == 403
    assert (
        post(url, "/api/workers/nobody/drain", headers={"X-Requested-By": "pyrocluster"}).status_code == 404
    )
    body = json.loads(post(url, "/api/workers/nobody/drain", headers={"X-Requested-By": "pyrocluster"}).text)
    assert "no worker named 'nobody'" in body["error"]
