"""Start-up that does less: the CLI imports a command's libraries only for that command, and
``submit --local`` starts its processes while it checks the job, still refusing a bad one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest

from pyrocluster.errors import ClusterUnreachable
from pyrocluster.local import PARENT_ENV, LocalCluster, ManagedProcess, reserve_port, start_nameserver
from tests.conftest import run_cli, wait_for
from tests.helpers.roles import issue, secret_env, token_env

HEAVY = ("Pyro5", "rich", "pydantic", "yaml", "httpx", "pyrocluster.config", "pyrocluster.coordinator")


def test_importing_the_cli_loads_no_command_libraries() -> None:
    code = f"import json, sys, pyrocluster.cli; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == []


def test_help_lists_every_command_and_each_one_loads() -> None:
    listed = run_cli("--help")
    assert listed.returncode == 0, listed
    commands = [
        "cancel",
        "dashboard",
        "forget",
        "nameserver",
        "results",
        "scheduler",
        "status",
        "submit",
        "tls",
    ]
    for name in [*commands, "worker"]:
        assert f"  {name} " in listed.stdout, listed.stdout
        help_text = run_cli(name, "-h")
        assert help_text.returncode == 0 and "Usage:" in help_text.stdout, help_text
    unknown = run_cli("bogus")
    assert unknown.returncode == 2 and "error: No such command 'bogus'" in unknown.stderr


def leftovers(parent_pid: int) -> list[int]:
    """Processes started for ``parent_pid`` (they carry its pid in their environment) still alive."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get(PARENT_ENV) == str(parent_pid):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_submit_local_still_refuses_a_bad_job_and_stops_what_it_started(tmp_path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("tasks:\n  - call: add\n    args: [1, 2]\n    retires: 3\n")
    cmd = [sys.executable, "-m", "pyrocluster", "submit", str(job), "--local", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    _, err = proc.communicate(timeout=60)
    # right after exit: the parent-watch of an orphan takes a second, so anything found was left behind
    assert leftovers(proc.pid) == []
    assert proc.returncode == 2, err
    assert "error:" in err and "tasks[0]" in err and "retires" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "job.results.jsonl").exists()


def test_a_process_without_secret_token_or_health_port_loads_no_crypto_or_http_server() -> None:
    modules = (
        "pyrocluster.worker, pyrocluster.ops.supervise, pyrocluster.nameserver.server, pyrocluster.roles"
    )
    heavy = ("cryptography", "http.server")
    code = f"import json, sys, {modules}; print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == []


def test_the_reserved_port_is_kept_from_others_until_the_nameserver_takes_it(processes) -> None:
    with reserve_port() as reservation:
        port = reservation.getsockname()[1]
        plain = socket.socket()
        with pytest.raises(OSError), plain:
            plain.bind(("127.0.0.1", port))
        ns_proc, address = start_nameserver(port=port)
        processes.add(ns_proc)
    assert address == f"127.0.0.1:{port}"


def test_local_workers_started_with_a_nameserver_that_fails_stop_when_told(tmp_path) -> None:
    # The workers start together with the name server and wait for it: when it cannot start,
    # the cluster says why and its workers end at the SIGTERM (exit 3 if they were waiting by
    # then), not at the SIGKILL that follows a wait they would not break.
    config = tmp_path / "bad.toml"
    config.write_text(f'[nameserver]\nstorage = "{tmp_path}/missing/ns.sqlite"\n')
    cluster = LocalCluster(2, ["--pool", "thread"], env={"PYROCLUSTER_CONFIG": str(config)}, wait=False)
    with pytest.raises(ClusterUnreachable, match="nameserver .* did not become ready"):
        cluster.wait_ready()
    assert len(cluster.workers) == 2
    assert all(w.proc.returncode in (3, -signal.SIGTERM) for w in cluster.workers), cluster.workers


def test_a_worker_waiting_for_its_nameserver_stops_at_a_sigterm(processes) -> None:
    with reserve_port() as reservation:  # nothing listens there
        ns = f"127.0.0.1:{reservation.getsockname()[1]}"
        worker = processes.add(
            ManagedProcess(["worker", "--ns", ns, "--services", "compute", "--pool", "thread"])
        )
        wait_for(
            lambda: any("waiting up to 30 s" in line for line in worker.output), 30, what="the worker waiting"
        )
        worker.signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=5) == 3
    worker.stop()
    assert "stopped while waiting for the name server" in "\n".join(worker.output)


def loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter holds after running ``code``."""
    probe = f"import json, sys\n{code}\nprint(json.dumps([m for m in {modules!r} if m in sys.modules]))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return list(json.loads(out.stdout))


def test_a_worker_starts_its_fork_server_before_loading_the_slot_code() -> None:
    slot_code = ("pyrocluster.slots.process", "pyrocluster.codec", "msgpack", "Pyro5")
    assert loaded_after("import pyrocluster.slots.forkserver", slot_code) == []


def test_the_fork_server_preloads_only_what_slot_processes_need() -> None:
    worker_only = ("psutil", "ctypes", "pyrocluster.slots.gate", "Pyro5", "url_normalize")
    assert loaded_after("import pyrocluster.slots.process", worker_only) == []


def test_settings_load_pyro5_only_when_applied() -> None:
    code = """
import pyrocluster.config as config
before = "Pyro5" in sys.modules
settings = config.Settings.from_sources()
config.apply(settings)
import Pyro5, Pyro5.serializers
assert not before and Pyro5.config.SERIALIZER == settings.serializer
assert "marshal" not in Pyro5.serializers.serializers
"""
    assert loaded_after(code, ("pyrocluster.pyro5_hooks",)) == ["pyrocluster.pyro5_hooks"]


def test_a_worker_loads_url_normalize_only_when_it_crawls() -> None:
    assert loaded_after("import pyrocluster.crawl.service", ("url_normalize", "idna")) == []


def descendants_named(pid: int, word: str) -> list[str]:
    """Command lines of ``pid``'s descendants that contain ``word``."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            cmdline = " ".join(child.cmdline())
            if word in cmdline:
                found.append(cmdline)
    return found


@pytest.mark.timeout(120)
def test_submit_local_serves_its_name_server_itself_with_the_secret(tmp_path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: nap\ntasks:\n  - id: nap\n    call: sleep\n    args: [1.5]\n")
    cmd = [sys.executable, "-m", "pyrocluster", "submit", str(job), "--local", "1", "--json"]
    env = {**os.environ, **secret_env("s3cret-for-the-local-cluster")}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env
    )
    try:
        # the worker registered and runs the task: the name server answered it, with the secret
        wait_for(lambda: bool(descendants_named(proc.pid, " worker ")), 60, what="the local worker")
        assert descendants_named(proc.pid, " nameserver ") == []
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out)["ok"] == 1
    assert "Traceback" not in err


@pytest.mark.timeout(120)
def test_submit_local_with_only_a_role_token_still_fails_as_its_name_server_did(tmp_path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("tasks:\n  - call: add\n    args: [1, 2]\n")
    env = token_env(issue("s3cret", "alice", "submitter"))
    result = run_cli("submit", str(job), "--local", "1", env=env, cwd=tmp_path, timeout=90)
    assert result.returncode == 3, result
    assert "nameserver" in result.stderr and "did not become ready" in result.stderr, result.stderr
    assert "may not run a name server (needs secret)" in result.stderr, result.stderr


@pytest.mark.timeout(60)
def test_slots_asked_for_early_are_handed_over_or_raise_what_making_them_raised() -> None:
    from pyrocluster.slots.early import EarlySlots
    from pyrocluster.slots.process import ProcessSlots

    slots = EarlySlots(2, [], 1 << 20).result()
    try:
        assert isinstance(slots, ProcessSlots) and slots.total == 2
    finally:
        slots.close()
    with pytest.raises(TypeError):  # the worker's start raises it where it made its slots before
        EarlySlots(1, None, 1 << 20).result()  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_a_worker_that_never_gets_ready_is_killed_with_the_processes_it_started(tmp_path) -> None:
    """Its slot processes are stuck loading a tasks module that sleeps: they go with it (they
    outlived it by the length of that sleep, reparented to init)."""
    sleepy = tmp_path / "sleepy_tasks.py"
    sleepy.write_text("import time\ntime.sleep(600)\n")
    worker = ManagedProcess(["worker", "--ns", "127.0.0.1:1", "--wait", "60", "--tasks", str(sleepy)])
    group = worker.pid  # it leads its own process group
    wait_for(lambda: len(alive_in_group(group)) >= 3, 30, what="the worker's slot processes")
    with pytest.raises(ClusterUnreachable, match="did not become ready"):
        worker.wait_ready(timeout_s=0.5)
    wait_for(lambda: not alive_in_group(group), 10, what="every process of the worker's group gone")


def alive_in_group(group: int) -> list[psutil.Process]:
    """The processes of a process group that are not zombies."""
    found = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error):
            if os.getpgid(proc.pid) == group and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found
