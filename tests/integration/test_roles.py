"""Roles (SPEC 13) on a real cluster: tokens of each role used through the CLI and through Pyro5
directly, revocation and expiry, operator actions and their audit lines.

Every process here runs with the cluster secret; the commands under test run with a token only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import Pyro5.api
import Pyro5.core
import Pyro5.errors
import pytest

from pyrocluster import auth, codec, operate, revocations, tokens
from pyrocluster.config import Settings
from pyrocluster.coordinator.status import cluster_status
from pyrocluster.handshake import credential
from pyrocluster.jobs.announce import cancel_job
from pyrocluster.local import ManagedProcess, start_nameserver, start_worker
from tests.conftest import TASKS_FILE, Processes, run_cli, wait_for
from tests.helpers.roles import secret_env, token_env

SECRET = "roles-secret-5d1c"
SECRET_ENV = secret_env(SECRET)
WORKER = "roles-w1"
REVOCATION_LIMIT_S = 5.0
"""SPEC 13: a revoked token is refused everywhere within this."""


class Secured:
    """A name server and one worker holding the secret, and helpers to act with tokens."""

    def __init__(self, processes: Processes, cwd: Path) -> None:
        self.processes = processes
        self.cwd = cwd
        ns_proc, self.ns = start_nameserver(env=SECRET_ENV)
        self.nameserver = processes.add(ns_proc)
        args = ["--name", WORKER, "--services", "compute", "--concurrency", "2", "--pool", "thread"]
        self.worker = processes.add(start_worker(self.ns, [*args, "--tasks", TASKS_FILE], env=SECRET_ENV))

    def cli(self, token: str | None, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = SECRET_ENV if token is None else token_env(token)
        return run_cli(*args, "--ns", self.ns, env=env, timeout=timeout, cwd=self.cwd)

    def issue(self, name: str, role: str, *extra: str) -> str:
        result = self.cli(None, "token", "issue", name, "--role", role, *extra)
        assert result.returncode == 0, result
        return result.stdout.strip()

    def issue_here(self, name: str, role: str) -> str:
        """A token issued in this process (what ``token issue`` does, without starting a command)."""
        token = tokens.issue(SECRET.encode(), name, tokens.Role.parse(role), time.time(), 3600)
        with auth.make_proxy(f"PYRO:Pyro.NameServer@{self.ns}", self.settings(None), timeout_s=5) as ns:
            revocations.record_token(ns, credential(None, token).peer)  # type: ignore[union-attr]
        return token

    def settings(self, token: str | None) -> Settings:
        if token is None:
            return Settings(secret=SECRET.encode()).with_ns(self.ns)
        return Settings(token=token).with_ns(self.ns)

    def uris(self) -> dict[str, Any]:
        with auth.make_proxy(f"PYRO:Pyro.NameServer@{self.ns}", self.settings(None), timeout_s=5) as ns:
            listing = ns.list(prefix=f"pyrocluster.worker.{WORKER}.")
        return {key.rpartition(".")[2]: uri for key, uri in listing.items()}

    def info(self) -> dict[str, Any]:
        with auth.make_proxy(self.uris()["control"], self.settings(None), timeout_s=5) as proxy:
            return dict(proxy.info())

    def revoke_until_refused(self, name: str, token: str) -> None:
        """Revoke token ``name`` and wait until the worker refuses ``token``."""
        assert self.cli(None, "token", "revoke", name).returncode == 0
        control = self.uris()["control"]

        def worker_refuses() -> bool:
            try:
                with auth.make_proxy(control, self.settings(token), timeout_s=5) as proxy:
                    proxy.info()
            except auth.AuthenticationRefused:
                return True
            return False

        wait_for(worker_refuses, REVOCATION_LIMIT_S + 5, what="the worker refuses the revoked token")


@pytest.fixture
def secured(processes: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Secured:
    monkeypatch.chdir(tmp_path)  # a scheduler writes its runs/ where it starts
    return Secured(processes, tmp_path)


def only_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result
    return lines[0]


def audit_lines(proc: ManagedProcess, action: str) -> list[str]:
    return [line for line in proc.output if "audit: " + action + " " in line]


def job_file(tmp_path: Path, name: str, tasks: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ntasks:\n{tasks}")
    return path


ADD_JOB = "  - {id: a, call: add, args: [40, 2]}\n"


def test_each_role_issued_used_and_revoked(secured: Secured) -> None:
    issued = {"viewer": secured.issue("t-viewer", "viewer")}  # the command once; the others directly
    issued.update({role: secured.issue_here(f"t-{role}", role) for role in ("submitter", "operator")})
    for role, token in issued.items():
        assert SECRET not in token
        shown = cluster_status(secured.settings(token))
        assert [w["name"] for w in shown["workers"]] == [WORKER], role
    revoked = secured.cli(None, "token", "revoke", "t-viewer")
    assert revoked.returncode == 0, revoked
    asked = time.monotonic()
    control = secured.uris()["control"]

    def worker_refuses() -> bool:
        try:
            with auth.make_proxy(control, secured.settings(issued["viewer"]), timeout_s=5) as proxy:
                proxy.info()
        except auth.AuthenticationRefused as exc:
            assert "revoked" in str(exc)
            return True
        return False

    wait_for(worker_refuses, REVOCATION_LIMIT_S + 5, what="the worker refuses the revoked token")
    assert time.monotonic() - asked < REVOCATION_LIMIT_S + 1  # one poll of margin
    refused = secured.cli(issued["viewer"], "status")
    assert refused.returncode == 3 and "revoked" in only_error_line(refused), refused
    assert cluster_status(secured.settings(issued["operator"]))["workers"]  # the others still work
    listed = json.loads(secured.cli(None, "token", "list", "--json").stdout)["tokens"]
    assert {t["name"]: t["state"] for t in listed} == {
        "t-viewer": "revoked",
        "t-submitter": "active",
        "t-operator": "active",
    }
    assert audit_lines(secured.nameserver, "token revoke")
    again = secured.issue_here("t-viewer", "viewer")  # a new token under the revoked name works
    assert cluster_status(secured.settings(again))["workers"]


def test_an_expired_token_is_refused_like_a_wrong_secret(secured: Secured) -> None:
    issued = time.time()
    token = secured.issue("short", "viewer", "--expires", "3s")  # expires at int(issue time + 3)
    first = secured.cli(token, "status")
    if time.time() < issued + 1.8:  # unless the machine is too slow to tell
        assert first.returncode == 0, first
    wait_for(lambda: time.time() > issued + 4, 6, what="the token's expiry")
    late = secured.cli(token, "status")
    assert late.returncode == 3, late
    assert "expired" in only_error_line(late)


def test_issuing_tokens_and_running_servers_need_the_secret(secured: Secured) -> None:
    operator = secured.issue("op", "operator")
    refused = secured.cli(operator, "token", "issue", "more", "--role", "operator")
    assert refused.returncode == 77, refused
    assert "role operator (op) may not issue tokens" in only_error_line(refused)
    refused = secured.cli(operator, "token", "revoke", "op")
    assert refused.returncode == 77, refused
    refused = secured.cli(operator, "worker", "--name", "sneaky", "--services", "crawl")
    assert refused.returncode == 77 and "may not run a worker (needs secret)" in only_error_line(refused)


def test_a_viewer_sees_but_cannot_submit_run_or_register(secured: Secured, tmp_path: Path) -> None:
    viewer = secured.issue("watcher", "viewer")
    assert secured.cli(viewer, "status").returncode == 0
    job = job_file(tmp_path, "v", ADD_JOB)
    result = secured.cli(viewer, "submit", str(job), "--out", str(tmp_path / "v.jsonl"))
    assert result.returncode == 77, result
    assert only_error_line(result) == "error: role viewer (watcher) may not submit jobs (needs submitter)"
    assert not (tmp_path / "v.jsonl").exists()
    settings = secured.settings(viewer)
    uris = secured.uris()
    request = {"from": "viewer-test", "calls": [["1", "add", [[40, 2], {}], 5.0, 0]]}
    with auth.make_proxy(uris["compute"], settings, timeout_s=5) as compute:
        with pytest.raises(auth.RoleRefusedRemotely, match="role viewer .* may not run tasks"):
            compute.run_batch(request)
        assert "add" in compute.tasks()  # reading is allowed
    with auth.make_proxy(f"PYRO:Pyro.NameServer@{secured.ns}", settings, timeout_s=5) as ns:
        with pytest.raises(auth.RoleRefusedRemotely, match="may not register"):
            ns.register("pyrocluster.worker.fake.compute", str(uris["compute"]))
        with pytest.raises(auth.RoleRefusedRemotely, match="may not remove names"):
            ns.remove(prefix="pyrocluster.worker.")
        assert ns.list(prefix="pyrocluster.worker.fake.") == {}
    with (
        auth.make_proxy(uris["control"], settings, timeout_s=5) as control,
        pytest.raises(auth.RoleRefusedRemotely, match="may not drain workers"),
    ):
        control.drain()
    info = secured.info()
    assert info["done"] == 0 and info["failed"] == 0 and info["state"] == "ready"


def start_job(secured: Secured, token: str | None, tmp_path: Path, name: str) -> subprocess.Popen[str]:
    gate = tmp_path / f"{name}.go"
    return start_submit(
        secured, token, job_file(tmp_path, name, f"  - {{id: h, call: hold, args: ['{gate}', 60]}}\n")
    )


def late_job(tmp_path: Path, first: str = "") -> tuple[Path, Path]:
    """Job file ``late``: ``first`` tasks, then ``h`` held until its gate file is written and ``a``
    after it; the gate and the job file."""
    gate = tmp_path / "late.go"
    tasks = (
        f"{first}  - {{id: h, call: hold, args: ['{gate}', 60]}}\n"
        "  - {id: a, call: add, args: [1, 2], needs: [h]}\n"
    )
    return gate, job_file(tmp_path, "late", tasks)


def start_submit(secured: Secured, token: str | None, job: Path) -> subprocess.Popen[str]:
    """``submit JOB --quiet`` in the background, with the token (or the secret), in the job's folder."""
    env = SECRET_ENV if token is None else token_env(token)
    return subprocess.Popen(
        [sys.executable, "-m", "pyrocluster", "submit", str(job), "--ns", secured.ns, "--quiet"],
        cwd=job.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def running_jobs(secured: Secured) -> list[str]:
    status = json.loads(secured.cli(None, "status", "--json").stdout)
    return [j["name"] for j in status["jobs"] if j.get("state") == "running"]


@pytest.fixture
def jobs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.communicate()


def test_a_submitter_submits_and_cancels_only_its_own_jobs(
    secured: Secured, tmp_path: Path, jobs: list[subprocess.Popen[str]]
) -> None:
    alice = secured.issue_here("alice", "submitter")
    bob = secured.issue_here("bob", "submitter")
    done = secured.cli(alice, "submit", str(job_file(tmp_path, "quick", ADD_JOB)), timeout=90)
    assert done.returncode == 0, done
    drain = secured.cli(alice, "drain", WORKER)
    assert drain.returncode == 77, drain
    assert only_error_line(drain) == "error: role submitter (alice) may not drain workers (needs operator)"
    jobs.append(start_job(secured, alice, tmp_path, "mine"))
    jobs.append(start_job(secured, None, tmp_path, "theirs"))
    wait_for(lambda: sorted(running_jobs(secured)) == ["mine", "theirs"], 30, what="both jobs running")
    refused = secured.cli(bob, "cancel", "mine")
    assert refused.returncode == 77, refused
    assert "role submitter (bob) may not cancel another's job" in only_error_line(refused)
    for who, job in ((bob, "theirs"), (alice, "theirs")):
        with pytest.raises(auth.RoleRefusedRemotely, match="may not cancel another's job"):
            cancel_job(secured.settings(who), job)
    assert [j.partition("@")[0] for j in cancel_job(secured.settings(alice), "mine")] == ["mine"]
    assert jobs[0].wait(timeout=30) == 130
    assert any(
        "audit: cancel by alice role=submitter" in line for line in jobs[0].communicate()[1].splitlines()
    )
    assert jobs[1].poll() is None  # the other job still runs
    assert len(cancel_job(secured.settings(secured.issue_here("oncall", "operator")), "theirs")) == 1
    assert jobs[1].wait(timeout=30) == 130


def run_add(secured: Secured) -> dict[str, Any]:
    """One ``add`` straight to the worker's compute service, with the secret."""
    request = {"from": "operator-test", "calls": [["1", "add", codec.pack_call([40, 2], {}), 5.0, 0]]}
    with auth.make_proxy(secured.uris()["compute"], secured.settings(None), timeout_s=5) as compute:
        return dict(compute.run_batch(request))


@pytest.mark.slow
def test_an_operator_drains_undrains_and_pauses_each_logged(secured: Secured, tmp_path: Path) -> None:
    operator = secured.issue_here("oncall", "operator")
    assert secured.cli(operator, "drain", WORKER).returncode == 0
    assert secured.info()["state"] == "draining"
    assert secured.worker.proc.poll() is None  # it stays up
    assert [w["state"] for w in cluster_status(secured.settings(operator))["workers"]] == ["draining"]
    assert run_add(secured)["refused"] == "draining"  # takes no new work
    assert operate.set_draining(secured.settings(operator), WORKER, False)
    assert secured.info()["state"] == "ready"
    assert "outcomes" in run_add(secured)
    for action in ("drain", "undrain"):
        lines = audit_lines(secured.worker, action)
        assert any(f"worker={WORKER}" in line and "by oncall role=operator" in line for line in lines), lines
    unknown = secured.cli(operator, "drain", "nobody")
    assert unknown.returncode == 2 and "no worker named 'nobody'" in only_error_line(unknown)

    schedules = tmp_path / "schedules.yaml"
    (tmp_path / "tick.yaml").write_text("name: tick\ntasks:\n" + ADD_JOB)
    schedules.write_text("schedules:\n  - name: s\n    job: tick.yaml\n    every: 1s\n    misfire: skip\n")
    scheduler = secured.processes.add(
        ManagedProcess(["scheduler", str(schedules), "--ns", secured.ns, "--name", "sch"], SECRET_ENV)
    )
    scheduler.wait_ready()
    wait_for(lambda: secured.info()["done"] >= 2, 20, what="the schedule fires")
    assert secured.cli(operator, "schedule", "pause", "s").returncode == 0
    shown = cluster_status(secured.settings(operator))["schedules"]
    assert [(s["name"], s["paused"]) for s in shown] == [("s", True)]
    time.sleep(1.5)  # a run decided just before the pause may still be finishing
    settled = secured.info()["done"]
    time.sleep(3)  # three ticks' worth: none may fire while paused
    assert secured.info()["done"] == settled
    assert operate.set_paused(secured.settings(operator), "s", False)
    wait_for(lambda: secured.info()["done"] > settled, 20, what="the schedule fires again")
    for action in ("pause", "resume"):
        lines = audit_lines(secured.nameserver, action)
        assert any("schedule=s" in line and "by oncall role=operator" in line for line in lines), lines
    with pytest.raises(LookupError, match="no schedule named 'nosuch'"):
        operate.set_paused(secured.settings(operator), "nosuch", True)


def replay(hello: dict[str, Any], host: str, port: int) -> None:
    """Connect with the captured ``hello`` as the handshake (a plain Pyro5 proxy: the bytes as sent)."""
    proxy = Pyro5.api.Proxy(f"PYRO:{hello['obj']}@{host}:{port}")
    proxy._pyroHandshake = hello
    proxy._pyroTimeout = 5
    try:
        proxy._pyroBind()
    finally:
        proxy._pyroRelease()


def test_a_handshake_replayed_to_a_restarted_worker_is_refused(secured: Secured) -> None:
    old = Pyro5.core.URI(secured.uris()["control"])
    hello = auth.client_hello(SECRET.encode(), old.object, time.time())
    replay(hello, old.host, old.port)  # the handshake as the worker accepted it once
    secured.worker.stop()
    args = ["--name", WORKER, "--services", "compute", "--port", str(old.port), "--pool", "thread"]
    secured.processes.add(start_worker(secured.ns, args, env=SECRET_ENV))
    with pytest.raises(Pyro5.errors.CommunicationError):
        replay(hello, old.host, old.port)  # same name, same address, within the window


def test_a_token_revoked_while_its_job_runs_ends_the_job_as_refused(
    secured: Secured, tmp_path: Path, jobs: list[subprocess.Popen[str]]
) -> None:
    carol = secured.issue_here("carol", "submitter")
    gate, job = late_job(tmp_path)
    jobs.append(start_submit(secured, carol, job))
    wait_for(lambda: running_jobs(secured) == ["late"], 30, what="the job running")
    secured.revoke_until_refused("carol", carol)
    gate.write_text("go")
    code = jobs[0].wait(timeout=60)
    out, err = jobs[0].communicate()
    assert code == 3, (out, err)
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "token 'carol' was revoked" in lines[0] and "--resume" in lines[0], err
    records = [json.loads(line) for line in (tmp_path / "late.results.jsonl").read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in records] == [("h", "ok")]  # 'a' never ran: --resume runs it
