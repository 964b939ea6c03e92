"""docs/deploy.md, followed literally on four network-namespace hosts.

Every fenced block whose first line is ``# on HOST`` runs on that host, in the page's order, one
command at a time (a heredoc is one command with its body). The test plays the parts a real machine
would: ``systemctl`` starts and stops the ``ExecStart`` of the unit files in ``deploy/systemd``,
``scp`` copies a file to another host's directory, ``pip install`` is the test's own install.
Each host's ``/etc/pyrocluster``, ``/var/lib/pyrocluster`` and ``/srv/jobs`` live in a directory
of its own. On top of the page: the job of step 5 runs while one host is cut off the network, and
again while the hosts are upgraded one at a time; neither loses a task.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.netns import HostProcess, Network, require_netns, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).parents[2]
GUIDE = ROOT / "docs" / "deploy.md"
UNITS = ROOT / "deploy" / "systemd"
HOSTS = ["alpha", "beta", "gamma", "delta"]
INSTALLED = "/opt/pyrocluster/bin/pyrocluster"
HOST_DIRS = ("/etc/pyrocluster", "/var/lib/pyrocluster", "/srv/jobs")
JOB_TASKS = 600
NO_ENV_SECRET = {"PYROCLUSTER_SECRET": "", "PYROCLUSTER_SECRET_FILE": "", "PYROCLUSTER_CONFIG": ""}
"""The page's secret comes from its config file: nothing in the environment may beat it."""


@dataclass
class Block:
    host: str
    tag: str
    commands: list[str] = field(default_factory=list)


def blocks() -> list[Block]:
    """The page's ``# on HOST [(tag)]`` blocks, each split into commands (a heredoc is one)."""
    found = []
    for body in re.findall(r"^```sh\n(.*?)^```", GUIDE.read_text(), re.M | re.S):
        head = re.match(r"# on (\w+)(?: \((\w+)\))?\n", body)
        if not head:
            continue
        block = Block(head.group(1), head.group(2) or "")
        lines = body[head.end() :].splitlines()
        while lines:
            command = lines.pop(0)
            heredoc = re.search(r"<<'(\w+)'", command)
            if heredoc:
                end = lines.index(heredoc.group(1))
                command = "\n".join([command, *lines[: end + 1]])
                del lines[: end + 1]
            if command.strip():
                block.commands.append(command)
        found.append(block)
    return found


def unit_file(name: str) -> Path:
    """The unit file of ``name`` (an instance's is its template's)."""
    template, _, instance = name.removesuffix(".service").partition("@")
    return UNITS / (f"{template}@.service" if instance else f"{template}.service")


class Walkthrough:
    """The hosts, their directories and their units, driven by the page's commands."""

    def __init__(self, net: Network, tmp: Path) -> None:
        self.net = net
        self.tmp = tmp
        self.bin = Path(sys.executable).parent
        self.units: dict[tuple[str, str], HostProcess] = {}
        for host in HOSTS:
            for directory in HOST_DIRS:
                self.local(host, directory).mkdir(parents=True)

    def local(self, host: str, path: str) -> Path:
        """Where ``path`` of ``host`` is here."""
        for directory in HOST_DIRS:
            if path == directory or path.startswith(directory + "/"):
                return self.tmp / host / path.lstrip("/")
        raise AssertionError(f"{path} is not in a host's directories")

    def rewrite(self, host: str, text: str) -> str:
        for directory in HOST_DIRS:
            text = text.replace(directory, str(self.tmp / host / directory.lstrip("/")))
        return text.replace(INSTALLED, str(self.bin / "pyrocluster"))

    def env(self) -> dict[str, str]:
        return {**NO_ENV_SECRET, "PATH": f"{self.bin}:{os.environ['PATH']}"}

    def run(self, host: str, command: str) -> None:
        words = shlex.split(command.splitlines()[0], comments=True)
        if words[0] == "systemctl":
            self.systemctl(host, words[1:])
        elif words[0] == "scp":
            self.scp(host, words[1:])
        elif words[0].endswith("/pip"):
            pass  # the test's own environment is the install
        else:
            done = self.net[host].run(["bash", "-c", self.rewrite(host, command)], env=self.env(), timeout=60)
            assert done.returncode == 0, f"on {host}: {command}\n{done.stdout}{done.stderr}"

    def background(self, host: str, command: str) -> HostProcess:
        return self.net[host].popen(
            ["bash", "-c", self.rewrite(host, command)], env=self.env(), label=command[:40]
        )

    def scp(self, host: str, words: list[str]) -> None:
        *sources, target = words
        other, _, path = target.partition("@")[2].partition(":")
        for source in sources:
            dest = self.local(other, path)
            if path.endswith("/"):
                dest = dest / Path(source).name
            text = self.local(host, source).read_bytes()
            if source.endswith(".toml"):  # the same file, pointing at the other host's directories
                text = text.replace(str(self.tmp / host).encode(), str(self.tmp / other).encode())
            dest.write_bytes(text)
            dest.chmod(self.local(host, source).stat().st_mode & 0o777)

    def systemctl(self, host: str, words: list[str]) -> None:
        verb, *names = [w for w in words if w != "--now"]
        for name in names:
            key = (host, name)
            if verb in ("stop", "disable", "restart") and key in self.units:
                proc = self.units.pop(key)
                if re.search(r"^KillMode=mixed$", unit_file(name).read_text(), re.M):
                    proc.proc.send_signal(signal.SIGTERM)  # as systemd does: the main process only
                else:
                    proc.signal(signal.SIGTERM)  # systemd's default: the whole control group
                code = proc.wait(60)
                tail = "\n".join(line for _, line in proc.lines[-40:])
                assert code == 0, f"{name} on {host} did not stop cleanly (exit {code}):\n{tail}"
            if verb in ("enable", "start", "restart"):
                self.units[key] = self.start_unit(host, name)

    def start_unit(self, host: str, name: str) -> HostProcess:
        instance = name.removesuffix(".service").partition("@")[2]
        unit = unit_file(name)
        exec_start = re.search(r"^ExecStart=(.*)$", unit.read_text(), re.M)
        assert exec_start, unit
        argv = shlex.split(self.rewrite(host, exec_start.group(1).replace("%i", instance)))
        workdir = re.search(r"^WorkingDirectory=(.*)$", unit.read_text(), re.M)
        cwd = self.rewrite(host, workdir.group(1)) if workdir else None
        proc = self.net[host].popen(argv, env=self.env(), cwd=cwd, label=name)
        proc.wait_ready()
        return proc

    def results(self) -> list[dict[str, object]]:
        path = self.local("gamma", "/srv/jobs/naps.results.jsonl")
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_every_task_once(walk: Walkthrough) -> None:
    records = walk.results()
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == JOB_TASKS
    assert all(r["status"] == "ok" for r in records), [r for r in records if r["status"] != "ok"][:3]


def test_the_deploy_guide_followed_literally(tmp_path: Path) -> None:
    require_netns()
    if shutil.which("curl") is None:
        pytest.skip("the guide checks readiness with curl, which is not installed")
    with Network(HOSTS) as net:
        walk = Walkthrough(net, tmp_path)
        upgrading = False
        for block in blocks():
            if block.tag == "job":
                *prepare, submit = block.commands
                for command in prepare:
                    walk.run(block.host, command)
                job = walk.background(block.host, submit)
                wait_until(
                    lambda: walk.local("gamma", "/srv/jobs/naps.results.jsonl").exists(), 30, "results"
                )
                wait_until(lambda: len(walk.results()) >= 60, 30, "some tasks done")
                net["beta"].link_down()  # the host drops off mid-job: its calls must run elsewhere
                assert job.proc.wait(timeout=120) == 0, "\n".join(line for _, line in job.lines)
                net["beta"].link_up()
                check_every_task_once(walk)
                job_again = submit
                continue
            if block.tag == "upgrade" and not upgrading:
                upgrading = True  # the job runs again while the hosts are upgraded one at a time
                walk.local("gamma", "/srv/jobs/naps.results.jsonl").unlink()
                job = walk.background("gamma", job_again)
                wait_until(
                    lambda: walk.local("gamma", "/srv/jobs/naps.results.jsonl").exists(), 30, "results"
                )
            for command in block.commands:
                walk.run(block.host, command)
        assert upgrading
        assert job.proc.wait(timeout=120) == 0, "\n".join(line for _, line in job.lines)
        check_every_task_once(walk)
        status = net["gamma"].run(
            [
                "bash",
                "-c",
                walk.rewrite("gamma", "pyrocluster status --json --config /etc/pyrocluster/pyrocluster.toml"),
            ],
            env=walk.env(),
        )
        assert status.returncode == 0, status.stderr
        workers = {w["name"]: w for w in json.loads(status.stdout)["workers"]}
        assert sorted(workers) == ["alpha", "delta", "gamma"]  # beta was removed
        assert all(w["state"] == "ready" for w in workers.values()), workers
        assert {w["address"].split(":")[0] for w in workers.values()} == {
            "10.77.0.1",
            "10.77.0.3",
            "10.77.0.4",
        }
