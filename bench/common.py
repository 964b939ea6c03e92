"""What the workloads share: options, the report, progress lines, timing, and the shared clusters."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.report import Report

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The checkout; subprocesses run from here so that ``-m bench.…`` and ``-m pyrocluster`` import."""


@dataclass
class Sizes:
    """How big and how often: the full run and ``--quick`` differ only here."""

    reps: int
    w1_items: int
    latency_calls: int
    w2_tasks: int
    w2_task_s: float
    w2_serial_reps: int
    w3_pages: int
    scale_workers: list[int]
    scale_items: int
    memory_items: int
    flow_chain: int = 1_000
    """Dependent tasks in the workflow chain."""
    flow_fan: int = 20_000
    """Items of the workflow fan-out/fan-in (and of the flat map it is compared with)."""

    @classmethod
    def full(cls) -> Sizes:
        """The benchmark sizes."""
        return cls(
            reps=5,
            w1_items=20_000,
            latency_calls=2_000,
            w2_tasks=180,
            w2_task_s=0.05,
            w2_serial_reps=1,
            w3_pages=3_000,
            scale_workers=[16, 32, 64, 128],
            scale_items=20_000,
            memory_items=1_000_000,
        )

    @classmethod
    def quick(cls) -> Sizes:
        """About a minute: fewer repetitions, smaller sizes (ratios are indicative only)."""
        return cls(
            reps=3,
            w1_items=10_000,
            latency_calls=500,
            w2_tasks=40,
            w2_task_s=0.05,
            w2_serial_reps=1,
            w3_pages=600,
            scale_workers=[8, 16],
            scale_items=5_000,
            memory_items=200_000,
            flow_chain=300,
            flow_fan=5_000,
        )


@dataclass
class Context:
    """Options, the report, and the long-lived things several workloads use."""

    sizes: Sizes
    report: Report
    started: float = field(default_factory=time.monotonic)
    _default_cluster: Any = None
    _raw_thread: Any = None
    _raw_processes: dict[bool, Any] = field(default_factory=dict)
    _pools: dict[int, Any] = field(default_factory=dict)

    def log(self, message: str) -> None:
        """A progress line on stderr (stdout is the report)."""
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)

    # -- shared resources --------------------------------------------------------------------

    def default_cluster(self) -> Any:
        """``Cluster.local(workers=2)`` with default settings (W1, latency, memory)."""
        if self._default_cluster is None:
            from pyrocluster.coordinator.cluster import Cluster

            self.log("starting a local cluster: name server + 2 workers, default settings")
            self._default_cluster = Cluster.local(workers=2)
        return self._default_cluster

    def close_default_cluster(self) -> None:
        """Stop the default cluster (before workloads that want the CPUs to themselves)."""
        if self._default_cluster is not None:
            self._default_cluster.close()
            self._default_cluster = None

    def raw_thread(self) -> str:
        """URI of a raw Pyro5 daemon serving ``add`` in a thread of this process."""
        if self._raw_thread is None:
            from bench import raw

            self._raw_thread = raw.serve_in_thread()
        return self._raw_thread[1]

    def raw_process(self, hop: bool = False) -> str:
        """URI of a raw Pyro5 daemon serving ``add`` in a process of its own; with ``hop``, its
        ``add`` runs in a child process reached over a pipe (``python -m bench.raw --hop``)."""
        if hop not in self._raw_processes:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.raw", *(["--hop"] if hop else [])],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stdin=subprocess.PIPE,
                text=True,
            )
            assert proc.stdout is not None
            uri = proc.stdout.readline().strip()
            if not uri.startswith("PYRO:"):
                proc.kill()
                raise RuntimeError(f"raw Pyro5 server did not start: {uri!r}")
            self._raw_processes[hop] = (proc, uri)
        return str(self._raw_processes[hop][1])

    def pool(self, processes: int = 2) -> Any:
        """A warm ``multiprocessing.Pool`` (spawn: this process has threads, so no fork)."""
        if processes not in self._pools:
            pool = multiprocessing.get_context("spawn").Pool(processes)
            pool.map(abs, range(processes * 4), chunksize=1)  # every child up and importing done
            self._pools[processes] = pool
        return self._pools[processes]

    def close_pools(self) -> None:
        """Stop the pools."""
        for pool in self._pools.values():
            pool.terminate()
            pool.join()
        self._pools.clear()

    def close(self) -> None:
        """Stop everything this context started."""
        self.close_default_cluster()
        self.close_pools()
        if self._raw_thread is not None:
            daemon, _, thread = self._raw_thread
            daemon.shutdown()
            thread.join(timeout=5)
            daemon.close()
            self._raw_thread = None
        for proc, _ in self._raw_processes.values():
            proc.stdin.close()  # it exits when its stdin closes
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._raw_processes.clear()


class LoadMonitor:
    """Samples every process's CPU time to tell how much of the machine others used meanwhile.

    A shared machine (other test suites, builds) skews every figure; this makes it visible.
    Our processes are this one and its descendants; everything else is *foreign*.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        import threading

        import psutil

        self._psutil = psutil
        self.interval_s = interval_s
        self.me = os.getpid()
        self.cpus = os.cpu_count() or 1
        self.foreign_s = 0.0
        self.ours_s = 0.0
        self._last: dict[tuple[int, float], float] = {}
        self._ours: dict[tuple[int, float], bool] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="load-monitor", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        ppid: dict[int, int] = {}
        now: dict[tuple[int, float], float] = {}
        for p in self._psutil.process_iter(["ppid", "cpu_times", "create_time"]):
            info = p.info
            if info["cpu_times"] is None:
                continue
            key = (p.pid, info["create_time"] or 0.0)
            ppid[p.pid] = info["ppid"] or 0
            now[key] = info["cpu_times"].user + info["cpu_times"].system
        foreign = ours = 0.0
        for key, cpu in now.items():
            if key not in self._ours:
                pid, seen = key[0], 0
                while pid not in (0, 1, self.me) and seen < 64:
                    pid, seen = ppid.get(pid, 0), seen + 1
                self._ours[key] = pid == self.me
            delta = cpu - self._last.get(key, cpu if not self._last else 0.0)
            if self._ours[key]:
                ours += delta
            else:
                foreign += delta
        with self._lock:
            self.foreign_s += foreign
            self.ours_s += ours
        self._last = now

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def mark(self) -> tuple[float, float, float]:
        """A point to measure from."""
        with self._lock:
            return time.monotonic(), self.foreign_s, self.ours_s

    def since(self, mark: tuple[float, float, float]) -> tuple[float, float]:
        """Share of the machine's CPU used by others and by us since ``mark`` (0..1 each)."""
        self._sample()
        with self._lock:
            wall = max(1e-9, time.monotonic() - mark[0]) * self.cpus
            return (self.foreign_s - mark[1]) / wall, (self.ours_s - mark[2]) / wall

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=2)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of ``fn()`` and its value."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def round_robin(
    variants: dict[str, Callable[[], float]],
    reps: int,
    warmup: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Run each variant ``reps`` times, interleaved so drift hits them all alike; samples by name.

    Each variant returns its own sample (seconds, a rate, ...). With ``warmup`` every variant
    runs once untimed first (connections, pools and batch sizes settle).
    """
    if warmup:
        for name, fn in variants.items():
            if log:
                log(f"  warm-up: {name}")
            fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(reps):
        for name, fn in variants.items():
            samples[name].append(fn())
        if log:
            log(f"  rep {rep + 1}/{reps}: " + ", ".join(f"{n} {s[-1]:.4g}" for n, s in samples.items()))
    return samples


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(args: list[str], timeout_s: float = 300) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``python -m pyrocluster ARGS`` from the checkout; wall seconds and the finished process."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pyrocluster", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return time.perf_counter() - start, proc


class PeakSampler:
    """Samples this process's thread count and RSS every ``interval_s`` while in a ``with`` block.

    ``threads`` is the peak count of live threads minus ``base`` (the count before the
    coordinator under test was made), ``rss_mb`` the peak RSS of this process.
    """

    def __init__(self, base: int = 0, interval_s: float = 0.02) -> None:
        import threading

        import psutil

        self._proc = psutil.Process()
        self._threading = threading
        self.base = base
        self.interval_s = interval_s
        self.threads = 0
        self.rss_mb = 0.0
        self._stop = threading.Event()
        self._thread: Any = None

    def sample(self) -> None:
        """Take one sample now."""
        live = sum(1 for t in self._threading.enumerate() if t.name != "peak-sampler")
        self.threads = max(self.threads, live - self.base)
        self.rss_mb = max(self.rss_mb, self._proc.memory_info().rss / 1e6)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> PeakSampler:
        self.sample()
        self._thread = self._threading.Thread(target=self._loop, name="peak-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sample()


def worker_name(ready_line: str) -> str:
    """The worker's name in its ``pyrocluster worker NAME ready at ...`` line."""
    words = ready_line.split()
    return words[words.index("ready") - 1]


def starmap(cluster: Any, name: str, items: Any) -> Any:
    """``cluster.starmap`` (each item is the argument list), or ``map`` before it existed."""
    return getattr(cluster, "starmap", cluster.map)(name, items)
