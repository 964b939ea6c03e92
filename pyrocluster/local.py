"""Start and stop real name-server and worker processes on loopback (``--local``, tests, benches)."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from typing import IO, TYPE_CHECKING

from pyrocluster.errors import ClusterUnreachable, ConfigError

if TYPE_CHECKING:
    from pyrocluster.config import Settings
    from pyrocluster.nameserver.server import NameServerThreads

PARENT_ENV = "PYROCLUSTER_PARENT_PID"
"""Set for the processes we start: they stop when that process is gone (no orphans after SIGKILL)."""
CONFIG_EXIT = 2
"""A command's exit status for a usage or configuration error (SPEC 3, ``cli.common.EXIT_USAGE``)."""
LOCAL_DRAIN_S = 1.0
"""Seconds a private cluster's stopping worker waits for the tasks it holds: whoever closes the
cluster reads no more results, so a long task is not run to its end (a worker's own default is 30 s)."""
READY_TIMEOUT_S = 30.0
"""Seconds a started process has to print its ready line."""
STOP_TIMEOUT_S = 10.0
"""Seconds a stopped process has to exit after SIGTERM before it is killed."""


class ManagedProcess:
    """A pyrocluster child process whose output is watched for its ``ready`` line."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        self.output: deque[str] = deque(maxlen=200)
        self.ready_line = ""
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyrocluster", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {}), PARENT_ENV: str(os.getpid())},
            start_new_session=True,  # a Ctrl-C in the terminal is ours to forward, not theirs
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.output.append(line.rstrip("\n"))
            if not self._ready.is_set() and " ready" in line:
                self.ready_line = line.strip()
                self._ready.set()
        self._ready.set()
        stream.close()  # here too: stop() leaves it open while a read is blocked

    @property
    def pid(self) -> int:
        """Process id."""
        return self.proc.pid

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> str:
        """Block until the ready line; ClusterUnreachable with the process output if it never comes."""
        if not self._ready.wait(timeout_s) or not self.ready_line:
            self.kill()
            problems = [line.removeprefix("error: ") for line in self.output if line.startswith("error: ")]
            if self.proc.returncode == CONFIG_EXIT and problems:  # its options were wrong: say so alone
                raise ConfigError("; ".join(problems))
            tail = "\n".join(self.output)
            raise ClusterUnreachable(f"`pyrocluster {' '.join(self.args)}` did not become ready:\n{tail}")
        return self.ready_line

    def signal(self, sig: int) -> None:
        """Send a signal (if it still runs)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait, SIGKILL if needed; return the exit code."""
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        code = self.proc.wait()
        self._close_output()
        return code

    def kill(self) -> None:
        """SIGKILL it and what it started that is still in its process group (its slot processes,
        also one stuck loading a tasks module), and reap it."""
        if self.proc.poll() is None:
            try:  # it leads its own group (start_new_session)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        self.proc.wait()
        self._close_output()

    def _close_output(self) -> None:
        self._reader.join(timeout=2)
        # A task process orphaned by a killed worker can hold the pipe open: the reader then
        # blocks in a read, and closing the pipe under it would wait for that read for ever.
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()


def stop_when_parent_dies(stop: threading.Event, interval_s: float = 1.0) -> None:
    """If we were started by a ManagedProcess, set ``stop`` once that parent process is gone."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not parent.isdigit():
        return

    def watch() -> None:
        if _wait_for_exit(int(parent)):
            stop.set()
            return
        while not stop.wait(interval_s):
            if os.getppid() != int(parent):
                stop.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _wait_for_exit(parent: int) -> bool:
    """Block until ``parent`` (our parent process) exits, waking only then (a pidfd): True once
    it has; False where pidfds are missing or ``parent`` is not our parent (poll instead).

    Polling once a second costs every idle worker of a local cluster a wake-up a second.
    """
    if not hasattr(os, "pidfd_open") or os.getppid() != parent:
        return False
    try:
        fd = os.pidfd_open(parent)
    except OSError:  # gone already, or a kernel without pidfds
        return os.getppid() != parent
    try:
        if os.getppid() != parent:  # it exited before the pidfd was taken (its pid may be reused)
            return True
        waiter = select.poll()  # no FD_SETSIZE limit, unlike select()
        waiter.register(fd, select.POLLIN)
        waiter.poll()
        return True
    finally:
        os.close(fd)


def stop_processes(procs: list[ManagedProcess], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM them all at once (they drain in parallel), then reap each, killing laggards."""
    for proc in procs:
        proc.signal(signal.SIGCONT)
        proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.stop()


def ready_address(line: str) -> str:
    """The ``HOST:PORT`` after ``at`` in a ready line."""
    words = line.split()
    return words[words.index("at") + 1]


def start_nameserver(
    extra: list[str] | None = None, port: int = 0, env: dict[str, str] | None = None
) -> tuple[ManagedProcess, str]:
    """Start ``pyrocluster nameserver`` on loopback; return it and its ``HOST:PORT``."""
    proc = nameserver_process(extra, port, env)
    return proc, ready_address(proc.wait_ready())


def nameserver_process(
    extra: list[str] | None = None, port: int = 0, env: dict[str, str] | None = None
) -> ManagedProcess:
    """Start ``pyrocluster nameserver`` on loopback without waiting for its ready line."""
    return ManagedProcess(["nameserver", "--host", "127.0.0.1", "--port", str(port), *(extra or [])], env)


def reserve_port(host: str = "127.0.0.1") -> socket.socket:
    """A socket bound to a free port of ``host`` and not listening: while it stays open no other
    socket gets that port (an automatic bind skips it, a plain bind is refused), except one that
    binds it with ``SO_REUSEADDR`` as Pyro5's servers do. So a name server started on that port
    can be named to workers before it runs; close the reservation once it listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def start_worker(
    ns: str, extra: list[str] | None = None, env: dict[str, str] | None = None, wait: bool = True
) -> ManagedProcess:
    """Start ``pyrocluster worker`` against ``ns``; wait for its ready line unless ``wait`` is False."""
    proc = ManagedProcess(["worker", "--ns", ns, "--host", "127.0.0.1", *(extra or [])], env)
    if wait:
        proc.wait_ready()
    return proc


class LocalCluster:
    """A private name server and ``n`` workers on loopback, stopped on ``close()``.

    The constructor starts the processes (the name server and the workers together: the workers
    wait for it to listen, on a port reserved here so that it is known up front). With
    ``wait=False`` it returns then, and a thread waits for them while the caller does its own work
    (``submit --local`` loads and checks its job meanwhile); ``wait_ready()`` then waits for every
    ready line and raises what went wrong.

    Given ``settings``, the name server runs in threads of this process (``nameserver_threads``)
    instead of a process of its own (``nameserver``): ``submit --local`` saves an interpreter's
    start and the command line's imports that way.
    """

    def __init__(
        self,
        workers: int = 2,
        worker_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
        settings: Settings | None = None,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an integer of 0 or more, got {workers!r}")
        if isinstance(worker_args, (str, bytes)):  # would be split into single characters
            raise TypeError(
                f"worker_args must be a list of arguments, e.g. ['--concurrency', '1'], got {worker_args!r}"
            )
        self.env = env
        self.worker_args = list(worker_args or [])
        self.workers: list[ManagedProcess] = []
        self.nameserver: ManagedProcess | None = None
        self.nameserver_threads: NameServerThreads | None = None
        self._settings = settings
        self._failure: BaseException | None = None
        self._closing = threading.Lock()
        self._closed = False
        reservation = reserve_port()
        try:
            # Started here, not by the thread: the caller's own work next (a job's imports and
            # checks) would hold the interpreter lock the thread needs to start each process.
            self.address = f"127.0.0.1:{reservation.getsockname()[1]}"
            if settings is None:
                self.nameserver = nameserver_process(port=reservation.getsockname()[1], env=env)
            procs = [self.add_worker(wait=False) for _ in range(workers)]
        except BaseException:
            reservation.close()
            self.close()
            raise
        self._starter = threading.Thread(
            target=self._start, args=(reservation, procs), name="local-cluster", daemon=True
        )
        self._starter.start()
        if wait:
            self.wait_ready()

    def _start(self, reservation: socket.socket, procs: list[ManagedProcess]) -> None:
        try:
            with reservation:  # closed once the name server listens on its port
                if self.nameserver is not None:
                    self.nameserver.wait_ready()
                else:
                    self._serve_nameserver(reservation.getsockname()[1])
            for p in procs:
                p.wait_ready()
        except BaseException as exc:  # handed to wait_ready()
            self._failure = exc

    def _serve_nameserver(self, port: int) -> None:
        """Serve the name server from threads of this process on ``port`` (stopped by ``close()``,
        at once if that came first)."""
        from pyrocluster.nameserver.server import NameServerThreads

        assert self._settings is not None
        try:
            threads = NameServerThreads(self._settings, "127.0.0.1", port)
        except ConfigError as exc:  # as when a name server process fails: unreachable, exit 3
            raise ClusterUnreachable(f"the local name server did not start: {exc}") from None
        with self._closing:
            if not self._closed:
                self.nameserver_threads = threads
                return
        threads.close()

    def wait_ready(self) -> None:
        """Block until the name server and every worker printed their ready lines; on failure
        stop them all and raise (ClusterUnreachable with the process output)."""
        try:
            self._starter.join()
        except BaseException:  # Ctrl-C while waiting: nothing started is left behind
            self.close()
            raise
        if self._failure is not None:
            self.close()
            raise self._failure

    def add_worker(self, extra: list[str] | None = None, wait: bool = True) -> ManagedProcess:
        """Start one more worker (a drain timeout given in the arguments replaces ``LOCAL_DRAIN_S``)."""
        args = ["--drain-timeout", f"{LOCAL_DRAIN_S:g}", *self.worker_args, *(extra or [])]
        proc = start_worker(self.address, args, self.env, wait=wait)
        self.workers.append(proc)
        return proc

    def close(self) -> None:
        """Stop every worker, then the name server (even while the thread still waits for them)."""
        stop_processes(self.workers)
        if self.nameserver is not None:
            self.nameserver.stop()
        with self._closing:
            self._closed = True
            threads, self.nameserver_threads = self.nameserver_threads, None
        if threads is not None:
            threads.close()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_local(workers: int, task_modules: list[str], settings: Settings) -> LocalCluster:
    """Begin starting ``submit --local``'s ``workers`` workers (each loading ``task_modules``)
    and its name server; returns at once, ``wait_ready()`` waits for them.

    The name server runs in this process unless ``settings`` hold a role token without the
    secret: a name server needs the secret, and its own process refuses to start as before.
    """
    worker_args = [a for m in task_modules for a in ("--tasks", m)]
    in_process = settings.secret is not None or settings.token is None
    return LocalCluster(
        workers, worker_args, env=settings.child_env(), wait=False, settings=settings if in_process else None
    )
