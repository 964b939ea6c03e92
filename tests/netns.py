"""A multi-host test network made of Linux network namespaces, and the processes that run on it.

::

    with Network(["ns", "w1", "w2", "coord"]) as net:
        nameserver = net.start_nameserver("ns")            # 10.77.0.1:9090, cluster secret set
        net.start_worker("w1", "--concurrency", "2")       # --ns 10.77.0.1:9090 --host 10.77.0.2
        job = net["coord"].pyrocluster("submit", "job.yaml", "--ns", net.ns_address, cwd=tmp)
        net["w1"].link_down()                              # silent drop: TCP hangs, nothing is reset
        net["w1"].link_up()

Topology: a "switch" namespace holds a bridge ``br0``; every host is a namespace of its own whose
``eth0`` (10.77.0.<i>/24, i from 1 in the order given) is one end of a veth pair whose other end
is a port of the bridge. Interfaces are created inside those namespaces only, never in the root
namespace, so the machine's own interfaces and routes are never touched; the hosts can reach each
other and nothing else. Namespace names carry the test process's pid (``pcr-<pid>-<n>-<host>``),
so parallel runs never collide, and namespaces left by a run that was SIGKILLed are removed by the
next one. ``close()`` kills every process started here and deletes every namespace, whatever
happened.

Run as a script it also offers a helper for tests that must observe the name server from inside
a host: ``python tests/netns.py watch-ns --ns HOST:PORT --expect w1,w2``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from tests.conftest import wait_for

SUBNET = "10.77.0"
"""The /24 the test hosts live in; it exists only inside the namespaces of one Network."""
NS_PREFIX = "pcr"
"""Every namespace we create is named ``pcr-<pid>-<n>-<role>``."""
NAMESERVER_PORT = 9090
"""The name server's port on its host: each host has its own port space, so the default fits."""
READY_TIMEOUT_S = 30.0
"""Seconds a started process has to print its ready line."""
STOP_TIMEOUT_S = 5.0
"""Seconds a stopped process has to exit after SIGTERM before it is killed."""
PARENT_ENV = "PYROCLUSTER_PARENT_PID"
"""Our processes stop by themselves when the process named here is gone (see pyrocluster.local)."""

_sequence = itertools.count(1)


# -- availability ------------------------------------------------------------------------------


def _ip(
    *args: str, check: bool = True, timeout: float = 10.0, tool: str = "ip"
) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` (or ``bridge ARGS``); RuntimeError with its stderr when it fails and ``check``."""
    done = subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"`{tool} {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (not Linux, not root, no ``ip``, refused), or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root; run the reliability tests with sudo)"
    if shutil.which("ip") is None or shutil.which("bridge") is None:
        return "the `ip` and `bridge` commands (iproute2) are not installed"
    probe = f"{NS_PREFIX}-{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
        try:
            _ip("-n", probe, "link", "add", "br0", "type", "bridge")
            _ip("-n", probe, "link", "set", "br0", "up")
            _ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
            _ip("-n", probe, "link", "set", "v0", "master", "br0")
            for dev in ("v0", "v1"):
                _ip("-n", probe, "link", "set", dev, "up")
            _ip("-n", probe, "link", "set", "dev", "v0", "state", "0", tool="bridge")
        finally:
            _ip("netns", "del", probe, check=False)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create network namespaces, bridges or veth pairs here: {exc}"
    return None


def require_netns() -> None:
    """Skip the calling test, with the reason, where namespaces cannot be created."""
    import pytest

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)


def reap_stale_namespaces() -> list[str]:
    """Delete namespaces of ours whose creating process is gone (a run that was SIGKILLed)."""
    listing = _ip("netns", "list", check=False).stdout
    removed = []
    for line in listing.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = re.fullmatch(rf"{NS_PREFIX}-(\d+)-.+", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


# -- processes ---------------------------------------------------------------------------------


class HostProcess:
    """A process (in a host namespace or not) whose output lines are kept with the time they arrived.

    It runs in a session and process group of its own, so that signals reach its children too
    (a worker's pool processes): a SIGKILL or SIGSTOP here is the whole machine dying or freezing.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        netns: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        label: str = "",
    ) -> None:
        self.argv = list(argv)
        self.label = label or " ".join(self.argv[:4])
        self.lines: list[tuple[float, str]] = []
        self.ready_line = ""
        self.ready_at = 0.0
        self._ready = threading.Event()
        cmd = ["ip", "netns", "exec", netns, *self.argv] if netns else self.argv
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            now = time.time()
            self.lines.append((now, line.rstrip("\n")))
            if not self._ready.is_set() and " ready" in line:
                self.ready_line, self.ready_at = line.strip(), now
                self._ready.set()
        self._ready.set()

    @property
    def pid(self) -> int:
        """Process id (``ip netns exec`` execs the command, so this is the command itself)."""
        return self.proc.pid

    @property
    def output(self) -> str:
        """Everything it printed so far (stdout and stderr)."""
        return "\n".join(line for _, line in list(self.lines))

    def running(self) -> bool:
        """True while it has not exited."""
        return self.proc.poll() is None

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> str:
        """Block until its ``ready`` line; RuntimeError with its output when it never comes."""
        if not self._ready.wait(timeout_s) or not self.ready_line:
            self.kill()
            raise RuntimeError(f"{self.label} did not become ready within {timeout_s:g} s:\n{self.output}")
        return self.ready_line

    def wait(self, timeout_s: float) -> int:
        """Wait for it to exit; its exit code (TimeoutExpired after ``timeout_s``)."""
        code = self.proc.wait(timeout_s)
        self._reader.join(timeout=2)
        return code

    def signal(self, sig: int) -> None:
        """Send ``sig`` to its whole process group (if the group still exists)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the group and reap it."""
        self.signal(signal.SIGKILL)
        self.proc.wait()
        self._reader.join(timeout=2)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGCONT and SIGTERM, wait, SIGKILL if needed; its exit code."""
        if self.running():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout_s)
        self.kill()  # also catches stragglers of its group (pool processes)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


# -- the network -------------------------------------------------------------------------------


class Host:
    """One machine of the test network: a namespace with one address on the switch."""

    def __init__(self, network: Network, name: str, index: int) -> None:
        self.network = network
        self.name = name
        self.index = index
        self.netns = f"{network.prefix}-{name}"
        self.ip = f"{network.subnet}.{index}"
        self.port = f"p{index}"
        """Its port on the switch's bridge (the switch end of its veth pair)."""

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.ip})"

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on this host to completion and capture its output."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.netns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.network.env, **(env or {})},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"on {self.name}: {' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done

    def popen(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        label: str = "",
    ) -> HostProcess:
        """Start a command on this host; it is stopped when the network closes."""
        proc = HostProcess(
            argv,
            netns=self.netns,
            env={**self.network.env, **(env or {})},
            cwd=cwd,
            label=f"{self.name}: {label or ' '.join(argv[:4])}",
        )
        self.network.processes.append(proc)
        return proc

    def pyrocluster(
        self, *args: str, env: dict[str, str] | None = None, cwd: str | os.PathLike[str] | None = None
    ) -> HostProcess:
        """Start ``python -m pyrocluster ARGS`` on this host."""
        return self.popen(
            [sys.executable, "-m", "pyrocluster", *args],
            env=env,
            cwd=cwd,
            label=f"pyrocluster {' '.join(args[:2])}",
        )

    def link_down(self, mode: str = "drop") -> float:
        """Cut this host off the switch; the wall-clock time it happened.

        ``drop`` (default) disables its bridge port: every frame to or from it is silently
        dropped while its own interface stays up, as behind a firewall DROP rule or a dead switch
        port, so open TCP connections hang instead of being reset. ``down`` takes the switch end
        of the cable down (the host sees no carrier).
        """
        sw = self.network.switch
        if mode == "drop":
            # (`ip link set ... type bridge_slave state 0` exits 0 but leaves the port forwarding.)
            _ip("-n", sw, "link", "set", "dev", self.port, "state", "0", tool="bridge")
        elif mode == "down":
            _ip("-n", sw, "link", "set", self.port, "down")
        else:
            raise ValueError(f"mode must be 'drop' or 'down', not {mode!r}")
        return time.time()

    def link_up(self) -> float:
        """Reconnect this host (undoes either kind of cut); the wall-clock time it happened."""
        sw = self.network.switch
        _ip("-n", sw, "link", "set", self.port, "up")
        _ip("-n", sw, "link", "set", "dev", self.port, "state", "3", tool="bridge")
        return time.time()


class Network:
    """A switch and hosts as network namespaces, with every process started on them; a context manager."""

    def __init__(self, hosts: Sequence[str], *, secret: str | None = None, subnet: str = SUBNET) -> None:
        if not hosts or len(set(hosts)) != len(hosts) or len(hosts) > 250:
            raise ValueError("hosts must be 1 to 250 distinct names")
        self.prefix = f"{NS_PREFIX}-{os.getpid()}-{next(_sequence)}"
        self.switch = f"{self.prefix}-switch"
        self.subnet = subnet
        self.secret = secret or secrets.token_hex(16)
        self.hosts = {name: Host(self, name, i) for i, name in enumerate(hosts, 1)}
        self.processes: list[HostProcess] = []
        self.ns_address = ""
        """``HOST:PORT`` of the name server once ``start_nameserver`` ran."""
        self._created: list[str] = []

    @property
    def env(self) -> dict[str, str]:
        """Environment of every process on the network: the cluster secret, and who owns them."""
        return {"PYROCLUSTER_SECRET": self.secret, PARENT_ENV: str(os.getpid())}

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    # -- lifetime ----------------------------------------------------------------------------

    def create(self) -> Network:
        """Make the switch and the hosts (undoing everything if any step fails)."""
        reap_stale_namespaces()
        try:
            self._add_namespace(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for host in self.hosts.values():
                self._add_namespace(host.netns)
                _ip(
                    "-n",
                    host.netns,
                    "link",
                    "add",
                    "eth0",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    host.port,
                    "netns",
                    self.switch,
                )
                _ip("-n", self.switch, "link", "set", host.port, "master", "br0")
                _ip("-n", self.switch, "link", "set", host.port, "up")
                _ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
                _ip("-n", host.netns, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def close(self) -> None:
        """Kill every process started on the network, then delete every namespace."""
        errors = []
        for proc in self.processes:  # all at once: each may take a moment to drain
            if proc.running():
                proc.signal(signal.SIGCONT)
                proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in reversed(self.processes):
            try:
                proc.stop(timeout_s=max(0.1, deadline - time.monotonic()))
            except Exception as exc:  # keep going: the namespaces must go whatever happened
                errors.append(f"{proc.label}: {exc}")
        for name in reversed(self._created):
            done = _ip("netns", "del", name, check=False)
            if done.returncode != 0 and "No such file" not in done.stderr:
                errors.append(f"ip netns del {name}: {done.stderr.strip()}")
        self._created.clear()
        if errors:
            raise RuntimeError("network teardown: " + "; ".join(errors))

    def __enter__(self) -> Network:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- cluster roles -----------------------------------------------------------------------

    def start_nameserver(self, host: str, *extra: str, port: int = NAMESERVER_PORT) -> HostProcess:
        """``pyrocluster nameserver`` on the host's address (secret in the environment); waits for ready."""
        h = self.hosts[host]
        proc = h.pyrocluster("nameserver", "--host", h.ip, "--port", str(port), *extra)
        proc.wait_ready()
        self.ns_address = f"{h.ip}:{port}"
        return proc

    def start_worker(self, host: str, *extra: str, ns: str | None = None, wait: bool = True) -> HostProcess:
        """``pyrocluster worker --ns <name server> --host <its address> --name <host>``; waits for ready."""
        h = self.hosts[host]
        ns = ns or self.ns_address
        if not ns:
            raise RuntimeError("start the name server first (or pass ns)")
        args = ["worker", "--ns", ns, "--host", h.ip, *extra]
        if "--name" not in extra:
            args += ["--name", host]
        proc = h.pyrocluster(*args)
        if wait:
            proc.wait_ready()
        return proc

    def start_workers(self, hosts: Sequence[str], *extra: str) -> list[HostProcess]:
        """One worker on each host, started together, then waited for."""
        procs = [self.start_worker(h, *extra, wait=False) for h in hosts]
        for proc in procs:
            proc.wait_ready()
        return procs

    def submit(self, job: Path, cwd: Path, host: str = "coord") -> tuple[HostProcess, ResultsTail]:
        """``pyrocluster submit JOB --json --quiet`` on ``host``, and a tail of its results file."""
        proc = self.hosts[host].pyrocluster(
            "submit", str(job), "--ns", self.ns_address, "--json", "--quiet", cwd=cwd
        )
        return proc, ResultsTail(cwd / f"{job.stem}.results.jsonl")


# -- results files -----------------------------------------------------------------------------


class ResultsTail:
    """Follows a results file as it is appended, keeping every line ever written.

    It holds the file open, so lines written before ``submit`` compacts the file (which replaces
    it) are still read: ``records`` is the raw append log, duplicates included.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []
        self._file: IO[bytes] | None = None
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        """Read what was appended since the last call; every complete record so far."""
        if self._file is None:
            if not self.path.exists():
                return self.records
            self._file = open(self.path, "rb")  # noqa: SIM115 - held until close()
        data = self._partial + self._file.read()
        *lines, self._partial = data.split(b"\n")
        self.records.extend(json.loads(line) for line in lines if line.strip())
        return self.records

    def close(self) -> None:
        """Stop following."""
        if self._file is not None:
            self._file.close()
            self._file = None


def read_results(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a results file as it is now."""
    text = Path(path).read_text()
    return [
        json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n") and line.strip()
    ]


def write_job(
    path: Path, name: str, call: str, items: Sequence[Any], defaults: dict[str, Any] | None = None
) -> Path:
    """A job file with one mapped task ``<name>`` (ids ``<name>-<k>``) over ``items``."""
    lines = [f"name: {name}"]
    if defaults:
        lines.append("defaults:")
        lines.extend(f"  {key}: {json.dumps(value)}" for key, value in defaults.items())
    lines += ["tasks:", f"  - id: {name}", f"    call: {call}", f"    map: {json.dumps(list(items))}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll ``predicate`` until truthy; the test fails naming ``what`` after ``timeout_s``."""
    return wait_for(predicate, timeout_s, interval_s, what)


# -- helper run inside a host: watch the name server -------------------------------------------


def watch_nameserver(ns: str, expect: set[str], timeout_s: float, out: IO[str] = sys.stdout) -> int:
    """Poll the name server until it answers, then until every ``expect``-ed worker is registered.

    Prints one JSON line ``{"event": "up", "t": ...}`` when it first answers and one
    ``{"event": "registered", "t": ..., "workers": [...]}`` when all are there (wall-clock times).
    """
    import Pyro5.errors

    from pyrocluster import config
    from pyrocluster.config import Settings
    from pyrocluster.nameserver import registry

    settings = Settings.from_sources(ns=ns)
    config.apply(settings)
    deadline = time.monotonic() + timeout_s
    up = False
    while time.monotonic() < deadline:
        try:
            proxy = registry.connect(settings, timeout_s=1.0)
        except Exception:  # not up yet: ClusterUnreachable (refused) and the like
            time.sleep(0.02)
            continue
        try:
            while time.monotonic() < deadline:
                names = {entry.name for entry in registry.find_workers(proxy)}
                now = time.time()
                if not up:
                    up = True
                    print(json.dumps({"event": "up", "t": now}), file=out, flush=True)
                if expect <= names:
                    print(
                        json.dumps({"event": "registered", "t": now, "workers": sorted(names)}),
                        file=out,
                        flush=True,
                    )
                    return 0
                time.sleep(0.02)
        except Pyro5.errors.PyroError:
            pass
        finally:
            proxy._pyroRelease()
    print(json.dumps({"event": "timeout", "t": time.time()}), file=out, flush=True)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python tests/netns.py watch-ns --ns HOST:PORT --expect a,b [--timeout S]``."""
    parser = argparse.ArgumentParser(prog="tests/netns.py")
    sub = parser.add_subparsers(dest="command", required=True)
    watch = sub.add_parser(
        "watch-ns", help="report when the name server answers and lists the expected workers"
    )
    watch.add_argument("--ns", required=True)
    watch.add_argument("--expect", default="")
    watch.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    expect = {name for name in args.expect.split(",") if name}
    return watch_nameserver(args.ns, expect, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
