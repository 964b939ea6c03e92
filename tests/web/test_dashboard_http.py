"""The dashboard over real HTTP against a real cluster: /metrics, /api/status, auth, a frozen worker."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pyrocluster.listed_jobs import list_jobs
from pyrocluster.local import start_nameserver
from pyrocluster.web.auth import dashboard_token
from tests.conftest import run_cli, wait_for
from tests.web.helpers import get, start_dashboard

ALLOWED_LABELS = {"worker", "status", "state", "task", "job", "le", "resource", "service"}


def metrics(url: str) -> dict[str, list]:
    response = get(url, "/metrics")
    assert response.status_code == 200, response.text
    return {fam.name: fam.samples for fam in text_string_to_metric_families(response.text)}


def test_metrics_match_status_and_carry_no_task_ids(tmp_path: Path, nameserver, worker_factory, processes):
    worker_factory(2, "--services", "compute", "--pool", "thread", "--concurrency", "2")
    dash, url = start_dashboard(processes, nameserver)
    job = tmp_path / "mixed.yaml"
    job.write_text(
        "name: mixed\ntasks:\n  - id: sums\n    call: add\n    map: [[1, 2], [3, 4], [5, 6], [7, 8]]\n"
        "  - id: secret-id-boom\n    call: fail\n    args: [boom]\n"
    )
    result = run_cli("submit", str(job), "--ns", nameserver, "--quiet", cwd=tmp_path)
    assert result.returncode == 1, result
    status = json.loads(run_cli("status", "--ns", nameserver, "--json").stdout)
    expected = {(w["name"], "ok"): w["done"] for w in status["workers"]}
    expected.update({(w["name"], "failed"): w["failed"] for w in status["workers"]})
    assert sum(expected.values()) == 5

    def job_tasks(fams: dict) -> dict:
        samples = fams["pyrocluster_job_tasks"]
        return {s.labels["status"]: s.value for s in samples if s.labels["job"] == "mixed"}

    def counters():
        fams = metrics(url)
        got = {(s.labels["worker"], s.labels["status"]): s.value for s in fams["pyrocluster_tasks"]}
        # the finished job is listed once the dashboard's next look at the name server finds it
        return fams if got == expected and job_tasks(fams) else None

    fams = wait_for(counters, 10, what="/metrics counters equal to status, the job listed")
    assert {s.labels["state"]: s.value for s in fams["pyrocluster_workers"]} == {
        "ready": 2, "draining": 0, "unreachable": 0, "incompatible": 0
    }  # fmt: skip
    assert {s.labels["worker"]: s.value for s in fams["pyrocluster_worker_slots"]} == {
        w["name"]: 2 for w in status["workers"]
    }
    totals = {
        (s.labels["worker"], s.labels["resource"]): s.value for s in fams["pyrocluster_worker_resource"]
    }
    assert {totals[(w["name"], "cpu")] for w in status["workers"]} == {2}
    assert {(w["name"], "memory") in totals for w in status["workers"]} == {True}
    used = {
        (s.labels["worker"], s.labels["resource"]): s.value for s in fams["pyrocluster_worker_resource_used"]
    }
    assert used[(status["workers"][0]["name"], "cpu")] == 0
    counts = {
        s.labels["task"]: s.value
        for s in fams["pyrocluster_task_duration_seconds"]
        if s.name.endswith("_count")
    }
    assert counts == {"add": 4, "fail": 1}
    assert job_tasks(fams) == {"ok": 4, "failed": 1, "skipped": 0, "pending": 0}
    task_ids = {"sums", "secret-id-boom"} | {f"sums-{k}" for k in range(4)}
    for samples in fams.values():
        for sample in samples:
            assert set(sample.labels) <= ALLOWED_LABELS, sample
            assert not task_ids & set(sample.labels.values()), sample
    api = get(url, "/api/status").json()
    assert set(api) == set(status) and [w["name"] for w in api["workers"]] == [
        w["name"] for w in status["workers"]
    ]
    (finished,) = [j for j in api["jobs"] if j["name"] == "mixed"]
    assert finished["state"] == "finished" and finished["done"] == 5 and finished["failed"] == 1

    # A restarted dashboard knows it all again: counters from the workers, failures from the name server.
    dash.stop()
    _, url = start_dashboard(processes, nameserver)

    def restored():
        data = get(url, "/api/dashboard").json()
        failures = data["failures"].get(finished["id"]) or []
        return data if [f["id"] for f in failures] == ["secret-id-boom"] else None

    data = wait_for(restored, 10, what="the finished job's failure after a dashboard restart")
    assert data["jobs"] == list_jobs(data["status"]["jobs"])  # listed as `status` lists them
    (failure,) = data["failures"][finished["id"]]
    assert failure["type"] == "RuntimeError" and "RuntimeError: boom" in failure["traceback"]
    assert {(w["name"], w["done"], w["failed"]) for w in data["status"]["workers"]} == {
        (w["name"], w["done"], w["failed"]) for w in status["workers"]
    }
    wait_for(counters, 10, what="the same /metrics counters after a dashboard restart")


def test_token_auth_with_a_secret(processes):
    secret = "s3cret-for-the-dashboard-test"
    env = {"PYROCLUSTER_SECRET": secret}
    ns_proc, ns = start_nameserver(env=env)
    processes.add(ns_proc)
    printed = run_cli("dashboard", "--print-token", env=env)
    assert printed.returncode == 0, printed
    token = printed.stdout.strip()
    assert token == dashboard_token(secret.encode()) and secret not in token
    _, url = start_dashboard(processes, ns, env=env)
    for path in ("/", "/api/status", "/metrics", "/static/dashboard.js"):
        assert get(url, path).status_code == 401, path
        assert get(url, path, headers={"Authorization": f"Bearer {secret}"}).status_code == 401, path
        assert get(url, path, headers={"Authorization": f"Bearer {token}"}).status_code == 200, path
    assert get(url, f"/?token={secret}").status_code == 401
    first = get(url, f"/?token={token}")
    assert first.status_code == 303 and first.headers["location"] == "/"
    cookie = first.cookies["pyrocluster_token"]
    assert get(url, "/api/status", cookies={"pyrocluster_token": cookie}).status_code == 200
    assert get(url, "/api/status", cookies={"pyrocluster_token": secret}).status_code == 401


def test_print_token_without_a_secret_is_exit_2():
    result = run_cli("dashboard", "--print-token", env={"PYROCLUSTER_SECRET": ""})
    assert result.returncode == 2, result
    assert result.stderr.startswith("error: --print-token: no cluster secret"), result.stderr


def test_non_loopback_without_secret_needs_insecure():
    result = run_cli("dashboard", "--host", "0.0.0.0", "--ns", "127.0.0.1:1")
    assert result.returncode == 2, result
    assert "without a cluster secret" in result.stderr and "--insecure" in result.stderr


def test_frozen_worker_never_holds_a_scrape(nameserver, worker_factory, processes):
    frozen, _ = worker_factory(2, "--services", "compute", "--pool", "thread", "--concurrency", "1")
    _, url = start_dashboard(processes, nameserver)
    wait_for(lambda: len(get(url, "/api/status").json()["workers"]) == 2, 10, what="both workers listed")
    frozen.signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 6
        states: list[str] = []
        while time.monotonic() < deadline:
            for path in ("/metrics", "/api/status"):
                started = time.monotonic()
                response = get(url, path, timeout=3.0)
                assert response.status_code == 200
                assert time.monotonic() - started < 3.0, path
            doc = get(url, "/api/status", timeout=3.0).json()
            states = sorted(w["state"] for w in doc["workers"])
            if states == ["ready", "unreachable"]:
                break
            time.sleep(0.2)
        assert states == ["ready", "unreachable"], states
    finally:
        frozen.signal(signal.SIGCONT)


def test_frozen_nameserver_is_shown_and_the_workers_still_answer(nameserver, worker_factory, processes):
    worker_factory(1, "--name", "solo", "--services", "compute", "--pool", "thread", "--concurrency", "1")
    ns_proc = processes.started[0]
    _, url = start_dashboard(processes, nameserver)
    wait_for(lambda: get(url, "/api/status").json()["workers"], 10, what="the worker listed")
    ns_proc.signal(signal.SIGSTOP)
    try:

        def ns_shown_away():
            started = time.monotonic()
            doc = get(url, "/api/status", timeout=3.0).json()
            up = [s.value for s in metrics(url)["pyrocluster_nameserver_up"]]
            assert time.monotonic() - started < 3.0
            return doc if not doc["nameserver"]["reachable"] and up == [0.0] else None

        doc = wait_for(ns_shown_away, 10, what="the frozen name server shown unreachable")
        assert [(w["name"], w["state"]) for w in doc["workers"]] == [("solo", "ready")]
    finally:
        ns_proc.signal(signal.SIGCONT)
