"""Health probes and the systemd notify protocol of real name-server, worker and dashboard processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrocluster import Cluster
from pyrocluster.local import ManagedProcess, start_nameserver, start_worker
from tests.conftest import HERE, TASKS_FILE, Processes, wait_for

WEDGE_TASKS = str(HERE / "helpers" / "wedge.py")
CLEAN = {"PYROCLUSTER_SECRET": "", "PYROCLUSTER_SECRET_FILE": "", "PYROCLUSTER_CONFIG": ""}


def get(address: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(status, decoded JSON body or text) of ``GET http://address/path``."""
    request = urllib.request.Request(f"http://{address}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            status, body = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
        exc.close()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def health_address(ready_line: str) -> str:
    words = ready_line.replace(",", " ").split()
    return words[words.index("health") + (2 if words[words.index("health") + 1] == "at" else 1)]


class NotifySocket:
    """The datagram socket systemd would listen on; ``env`` points a child at it."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="pcn-", dir="/tmp")  # short: AF_UNIX paths are small
        self.path = os.path.join(self.directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, str]] = []

    def env(self, watchdog_s: float = 0.5) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": str(int(watchdog_s * 1e6))}

    def receive(self, timeout_s: float) -> list[str]:
        """Everything sent within ``timeout_s`` (returns as soon as nothing more is waiting after a first)."""
        deadline = time.monotonic() + timeout_s
        got = []
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append((time.monotonic(), data))
            got.append(data)
        return got

    def wait_for(self, message: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append((time.monotonic(), data))
            if data == message:
                return
        pytest.fail(f"no {message} within {timeout_s} s; got {[m for _, m in self.messages]}")

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def notify_sockets() -> Iterator[list[NotifySocket]]:
    made: list[NotifySocket] = []
    yield made
    for sock in made:
        sock.close()


def new_notify(made: list[NotifySocket]) -> NotifySocket:
    made.append(NotifySocket())
    return made[-1]


def test_worker_readyz_turns_503_with_a_reason_while_it_drains(
    nameserver: str, processes: Processes, tmp_path: Path
) -> None:
    worker = processes.add(
        start_worker(
            nameserver,
            [
                "--name",
                "hw",
                "--pool",
                "thread",
                "--concurrency",
                "1",
                "--tasks",
                TASKS_FILE,
                "--health-port",
                "0",
            ],
            env=CLEAN,
        )
    )
    address = health_address(worker.ready_line)
    assert get(address, "/readyz") == (200, {"status": "ok"})
    assert get(address, "/livez") == (200, {"status": "ok"})
    release = tmp_path / "release"
    with Cluster(nameserver, wait=10) as cluster:
        held = cluster.submit("hold", str(release), 60.0)
        wait_for(lambda: get(address, "/readyz")[0] == 200 and busy(nameserver), 10, what="the task running")
        worker.signal(15)
        status, body = wait_for(lambda: (r := get(address, "/readyz"))[0] == 503 and r, 10, what="503")
        assert body == {"status": "fail", "reason": "draining"}
        assert get(address, "/livez") == (200, {"status": "ok"})  # draining is alive, just not ready
        release.touch()
        assert held.result(timeout=20)
    assert worker.proc.wait(timeout=20) == 0


def busy(nameserver: str) -> bool:
    with Cluster(nameserver, wait=5) as cluster:
        return any(w["busy"] for w in cluster.status()["workers"])


def test_nameserver_and_worker_speak_the_notify_protocol(
    processes: Processes, notify_sockets: list[NotifySocket]
) -> None:
    ns_notify, worker_notify = new_notify(notify_sockets), new_notify(notify_sockets)
    ns_proc, address = start_nameserver(env={**CLEAN, **ns_notify.env()})
    processes.add(ns_proc)
    worker = processes.add(start_worker(address, ["--name", "nw"], env={**CLEAN, **worker_notify.env()}))
    for notify in (ns_notify, worker_notify):
        notify.wait_for("READY=1", 10)
        pings = notify.receive(2.0)
        assert pings.count("WATCHDOG=1") >= 3, pings  # every 0.25 s for a 0.5 s watchdog
    for notify, proc in ((worker_notify, worker), (ns_notify, ns_proc)):
        proc.signal(15)
        notify.wait_for("STOPPING=1", 10)
        assert proc.proc.wait(timeout=20) == 0


def test_a_worker_whose_request_loop_is_wedged_stops_pinging(
    nameserver: str, processes: Processes, notify_sockets: list[NotifySocket]
) -> None:
    notify = new_notify(notify_sockets)
    worker = processes.add(
        start_worker(
            nameserver,
            ["--name", "ww", "--pool", "thread", "--tasks", WEDGE_TASKS, "--health-port", "0"],
            env={**CLEAN, **notify.env()},
        )
    )
    address = health_address(worker.ready_line)
    notify.wait_for("READY=1", 10)
    assert notify.receive(1.5).count("WATCHDOG=1") >= 2
    with Cluster(nameserver, wait=10) as cluster:
        assert cluster.submit("wedge_request_loop").result(timeout=10) >= 1
    # a probe already under way may still land; after that, silence while the process runs on
    notify.receive(1.0)
    later = notify.receive(3.0)
    assert "WATCHDOG=1" not in later, later
    status, body = wait_for(lambda: (r := get(address, "/livez"))[0] == 503 and r, 10, what="/livez 503")
    assert "no answer from the serving loop" in body["reason"], body
    assert worker.proc.poll() is None  # still running: only its request loop is stuck
    worker.kill()


def test_dashboard_probes_need_no_token_and_reveal_nothing(nameserver: str, processes: Processes) -> None:
    dashboard = processes.add(
        ManagedProcess(
            ["dashboard", "--ns", nameserver, "--port", "0"],
            env={**CLEAN, "PYROCLUSTER_SECRET": "health-secret"},
        )
    )
    url = dashboard.wait_ready().split()[-1] if "token" not in dashboard.ready_line else ""
    address = dashboard.ready_line.split("http://", 1)[1].split("/", 1)[0]
    assert url or address
    assert get(address, "/livez") == (200, {"status": "ok"})
    wait_for(lambda: get(address, "/readyz") == (200, {"status": "ok"}), 10, what="dashboard ready")
    assert get(address, "/api/status")[0] == 401  # everything else still needs the token
    assert get(address, "/metrics")[0] == 401


def test_scheduler_is_ready_only_while_it_reaches_the_name_server(
    processes: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the scheduler keeps runs/ in its current directory
    ns_proc, address = start_nameserver(env=CLEAN)
    processes.add(ns_proc)
    (tmp_path / "job.yaml").write_text("name: tick\ntasks:\n  - id: t\n    call: echo\n    args: [1]\n")
    (tmp_path / "schedules.yaml").write_text(
        "schedules:\n  - name: hourly\n    job: job.yaml\n    every: 1h\n"
    )
    scheduler = processes.add(
        ManagedProcess(
            [
                "scheduler",
                str(tmp_path / "schedules.yaml"),
                "--ns",
                address,
                "--state",
                str(tmp_path / "state.json"),
            ]
            + ["--health-host", "127.0.0.1", "--health-port", "0"],
            env=CLEAN,
        )
    )
    health = health_address(scheduler.wait_ready())
    wait_for(lambda: get(health, "/readyz") == (200, {"status": "ok"}), 10, what="scheduler ready")
    ns_proc.stop()
    status, body = wait_for(lambda: (r := get(health, "/readyz"))[0] == 503 and r, 15, what="503")
    assert "unreachable" in body["reason"], body
    assert get(health, "/livez") == (200, {"status": "ok"})  # its loop still goes round


def test_a_bad_health_address_is_exit_2_before_anything_starts(nameserver: str) -> None:
    from tests.conftest import run_cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        result = run_cli("worker", "--ns", nameserver, "--name", "nohealth", "--health-port", port, env=CLEAN)
    assert result.returncode == 2 and "the port is already in use" in result.stderr, result
    result = run_cli("nameserver", "--port", "0", "--health-host", "0.0.0.0", "--health-port", "0", env=CLEAN)
    assert result.returncode == 2 and "--health-host 0.0.0.0" in result.stderr, result
    status = run_cli("status", "--ns", nameserver, "--json", env=CLEAN)
    assert json.loads(status.stdout)["workers"] == []  # the refused worker never registered


def test_scheduler_and_dashboard_speak_the_notify_protocol(
    nameserver: str,
    processes: Processes,
    notify_sockets: list[NotifySocket],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # the scheduler keeps runs/ in its current directory
    (tmp_path / "job.yaml").write_text("name: tick\ntasks:\n  - id: t\n    call: echo\n    args: [1]\n")
    (tmp_path / "schedules.yaml").write_text(
        "schedules:\n  - name: hourly\n    job: job.yaml\n    every: 1h\n"
    )
    scheduler_notify, dashboard_notify = new_notify(notify_sockets), new_notify(notify_sockets)
    scheduler = processes.add(
        ManagedProcess(
            [
                "scheduler",
                str(tmp_path / "schedules.yaml"),
                "--ns",
                nameserver,
                "--state",
                str(tmp_path / "s.json"),
            ],
            env={**CLEAN, **scheduler_notify.env()},
        )
    )
    dashboard = processes.add(
        ManagedProcess(
            ["dashboard", "--ns", nameserver, "--port", "0"], env={**CLEAN, **dashboard_notify.env()}
        )
    )
    for notify, proc in ((scheduler_notify, scheduler), (dashboard_notify, dashboard)):
        proc.wait_ready()
        notify.wait_for("READY=1", 10)
        pings = notify.receive(2.0)
        assert pings.count("WATCHDOG=1") >= 3, pings
    for notify, proc in ((scheduler_notify, scheduler), (dashboard_notify, dashboard)):
        proc.signal(15)
        notify.wait_for("STOPPING=1", 10)
        assert proc.proc.wait(timeout=30) == 0
