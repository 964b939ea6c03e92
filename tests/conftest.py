"""Fixtures: a real name server and real worker processes on loopback, all stopped at teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import Pyro5
import pytest

from pyrocluster import config
from pyrocluster.config import Settings
from pyrocluster.coordinator.status import cluster_status
from pyrocluster.errors import ClusterUnreachable
from pyrocluster.local import ManagedProcess, start_nameserver, start_worker, stop_processes

HERE = Path(__file__).parent
TASKS_FILE = str(HERE / "helpers" / "testtasks.py")
"""A user tasks module the integration tests load into workers."""


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``pyrocluster ARGS`` to completion and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "pyrocluster", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


def status_now(ns: str) -> dict[str, Any] | None:
    """The document ``status --json --ns NS`` prints, read in-process; None while the name server
    cannot be reached. For polling: a ``status`` process takes 1-7 s to start on a loaded 2-core
    machine, this a few milliseconds (a test still runs the command where its output is asserted).
    """
    settings = Settings.from_sources(ns=ns)
    config.apply(settings)
    try:
        return cluster_status(settings)
    except ClusterUnreachable:
        return None


class Processes:
    """Every process a test started, stopped at teardown whatever happened."""

    def __init__(self) -> None:
        self.started: list[ManagedProcess] = []

    def add(self, proc: ManagedProcess) -> ManagedProcess:
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        stop_processes(list(reversed(self.started)), timeout_s=5)


@pytest.fixture(autouse=True)
def _plain_transport_after() -> Iterator[None]:
    """A test that applied TLS in this process leaves Pyro5 speaking plain TCP again: a later test
    on the same xdist worker that connects without applying settings of its own (a fixture's
    look-up of the name server) otherwise met its plain name server with a TLS hello."""
    yield
    if Pyro5.config.SSL:
        config.apply(Settings())


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.stop_all()


@pytest.fixture
def nameserver(processes: Processes) -> str:
    """A fresh name server on an ephemeral port; its ``HOST:PORT``."""
    proc, address = start_nameserver()
    processes.add(proc)
    return address


WorkerFactory = Callable[..., list[ManagedProcess]]


@contextmanager
def running_cluster(*workers: Sequence[str], env: dict[str, str] | None = None) -> Iterator[str]:
    """A name server and one worker per argument list, started together and all stopped at the
    end (``env`` added to each one's environment); the name server's address.

    For module-scoped fixtures: tests that only submit calls or jobs and read what comes back
    share one cluster instead of paying a name server and workers each (about 2 s of start and
    1 s of stop per test on a loaded 2-core machine). A test that kills, pauses, drains or
    reconfigures a process, or reads the whole cluster's status, keeps its own.
    """
    procs = Processes()
    try:
        ns_proc, ns = start_nameserver(env=env)
        procs.add(ns_proc)
        started = [procs.add(start_worker(ns, list(args), env=env, wait=False)) for args in workers]
        for proc in started:
            proc.wait_ready()
        yield ns
    finally:
        procs.stop_all()


@pytest.fixture
def worker_factory(nameserver: str, processes: Processes) -> WorkerFactory:
    """``worker_factory(n, *args)`` starts ``n`` workers against the fixture's name server."""

    def create(n: int = 1, *args: str, wait: bool = True) -> list[ManagedProcess]:
        procs = [processes.add(start_worker(nameserver, [*args], wait=False)) for _ in range(n)]
        if wait:
            for p in procs:
                p.wait_ready()
        return procs

    return create


def start_submit(job: Path, ns: str, cwd: Path, *args: str) -> subprocess.Popen[str]:
    """``pyrocluster submit JOB --ns NS ARGS`` in the background; stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "pyrocluster", "submit", str(job), "--ns", ns, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def submit_interrupted(
    job: Path, ns: str, cwd: Path, started: Callable[[], Any], *args: str, what: str = "the job under way"
) -> tuple[int, str, str]:
    """``submit JOB`` in the background, Ctrl-C (SIGINT) once ``started()`` holds: its exit code,
    stdout and stderr (the process is killed if it outlives the test's waits)."""
    proc = start_submit(job, ns, cwd, *args)
    try:
        wait_for(started, 60, interval_s=0.05, what=what)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    return proc.returncode, stdout, stderr


def wait_for(
    predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.1, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it is truthy and return its value; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:g} s")
        time.sleep(interval_s)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the longest tests first: ``slow`` ones, then the rest, unit tests (short) last.

    With ``-n 2`` (and ``--maxschedchunk 1``) each test process takes the next test as it gets
    free; a long test picked up near the end keeps one process busy while the others idle.
    Started first, the long ones overlap each other and the short ones fill in behind them. The
    sort is stable, so the rest of each module's tests stay together in their order.
    """

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("slow"):
            return 0
        return 2 if item.nodeid.startswith("tests/unit/") else 1

    items.sort(key=rank)
