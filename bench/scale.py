"""Scale: one coordinator against many workers on loopback (thread pool, one slot each, compute only).

For each worker count of the curve (``--workers``, default 16,32,64,128), and for 2 workers as
the reference every ratio is taken against, a fresh coordinator (``Cluster``) in this process:

* ``pyrocluster status --json`` as a subprocess (interpreter start included) and
  ``cluster.status()`` in process;
* ``Cluster.map`` of N tiny ``add`` tasks, and N single ``cluster.submit`` calls (counted per
  worker by ``future.worker``), in tasks/s;
* the coordinator's threads (peak while the map and the submits run, minus the threads this
  process had before the coordinator was made) and this process's peak RSS;
* the time from SIGKILL of the worker running a 2 s call to the coordinator no longer sending
  it work (the call then runs again elsewhere);
* what each worker costs, from the kernel's counters (``bench/costs.py``, the same on a loaded
  machine): CPU and wake-ups per second of the idle workers, the name server and the idle
  coordinator; the coordinator's and the workers' CPU per 1,000 tasks of the map and of the
  submits; batches per map; one name-server listing of every worker (a discovery pass).

Workers are added between points (never restarted), in waves so that interpreters starting at
once on 2 cores do not trip the ready timeout.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import wait
from dataclasses import dataclass, field
from typing import Any

from bench.common import Context, PeakSampler, run_cli, starmap, worker_name
from bench.costs import Collections, Meter, Usage, processes, threads_here
from bench.report import BASE, INFO, PYRO
from bench.startup import import_cli

NAME = "Scale"
WAVE = 16
"""Workers started at once."""
WORKER_ARGS = ["--concurrency", "1", "--pool", "thread", "--services", "compute"]
REFERENCE = 2
"""The worker count every ratio of the curve is taken against."""
THREADS_FLAT = 4
"""Most the coordinator's peak thread count may differ between points of the curve."""
KILL_LIMIT_S = 30.0
SPREAD_SLEEP_S = 0.005
SPREAD_PER_WORKER = 4
"""Calls of ``sleep(SPREAD_SLEEP_S)`` a worker, submitted at once, to see that calls taking real
time reach every worker (cheap ones keep to a few: ``balancer.first_look``)."""
IDLE_S = 3.0
"""Window over which the idle costs are counted."""
BENCH_THREADS = {"load-monitor", "peak-sampler"}
"""This process's threads that measure rather than coordinate (left out of the coordinator's CPU)."""


@dataclass
class Point:
    """What one worker count measured."""

    workers: int
    status_cli: list[float] = field(default_factory=list)
    status_inproc: list[float] = field(default_factory=list)
    listed: int = 0
    map_rates: list[float] = field(default_factory=list)
    submit_rate: float = 0.0
    share: Counter[str] = field(default_factory=Counter)
    submit_batches: int = 0
    """Batches the single submits went in: cheap calls keep to the few workers that keep the
    coordinator busy (``balancer.most_in_flight``, ``balancer.first_look``)."""
    spread: Counter[str] = field(default_factory=Counter)
    """Workers that ran ``SPREAD_PER_WORKER`` calls a worker of ``sleep(SPREAD_SLEEP_S)``, submitted
    at once: calls that take real time go to every free worker."""
    threads_idle: int = 0
    threads_map: int = 0
    threads_submit: int = 0
    rss_mb: float = 0.0
    kill_s: float | None = None
    worker_rss: list[float] = field(default_factory=list)
    idle: dict[str, Usage] = field(default_factory=dict)
    """Idle window: "workers", "nameserver", "coordinator"."""
    map_use: dict[str, Usage] = field(default_factory=dict)
    submit_use: dict[str, Usage] = field(default_factory=dict)
    batches_per_map: float = 0.0
    idle_threads: str = ""
    map_gc: Collections | None = None
    """The idle coordinator's busiest threads."""
    listing_ms: list[float] = field(default_factory=list)

    @property
    def threads(self) -> int:
        """Peak coordinator threads at this point."""
        return max(self.threads_idle, self.threads_map, self.threads_submit)


def live_threads() -> int:
    """Threads of this process (the sampler's own excluded)."""
    return sum(1 for t in threading.enumerate() if t.name != "peak-sampler")


def settled_threads(timeout_s: float = 5.0) -> int:
    """The thread count once the threads of a closed coordinator have ended (or ``timeout_s``)."""
    last, stable_since = live_threads(), time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and time.monotonic() - stable_since < 0.5:
        time.sleep(0.05)
        now = live_threads()
        if now != last:
            last, stable_since = now, time.monotonic()
    return last


def link_sends_to(cluster: Any, name: str) -> bool:
    """True while the coordinator would still send work to worker ``name``."""
    dispatcher = cluster._dispatcher
    known = getattr(dispatcher, "records", dispatcher.links).get(name)  # records: since protocol v2
    return known is not None and known.state == "ready"


def grow(ctx: Context, local: Any, count: int) -> None:
    """Start workers until ``local`` has ``count``."""
    while len(local.workers) < count:
        wave = [local.add_worker(wait=False) for _ in range(min(WAVE, count - len(local.workers)))]
        for p in wave:
            p.wait_ready()
    ctx.log(f"{NAME}: {count} workers ready")


def holding_work(cluster: Any) -> list[str]:
    """Names of the workers that hold a batch of this coordinator now."""
    dispatcher = cluster._dispatcher
    with dispatcher._cond:
        known = getattr(dispatcher, "records", dispatcher.links)  # records: since protocol v2
        return [name for name, k in known.items() if k.state == "ready" and k.busy()]


def kill_detection(cluster: Any, local: Any) -> float | None:
    """SIGKILL the worker running a 2 s call; seconds until the coordinator stops sending to it."""
    from pyrocluster.nameserver import registry

    by_name = {worker_name(p.ready_line): p for p in local.workers}
    future = cluster.submit("sleep", 2.0)
    victim = name = None
    deadline = time.monotonic() + 10
    while victim is None and time.monotonic() < deadline:
        busy = [n for n in holding_work(cluster) if n in by_name]
        if busy:
            name = busy[0]
            victim = by_name[name]
        else:
            time.sleep(0.0005)
    if victim is None or name is None:
        return None
    started = time.perf_counter()
    os.kill(victim.pid, signal.SIGKILL)
    detected: float | None = None
    while time.perf_counter() - started < KILL_LIMIT_S:
        if not link_sends_to(cluster, name):
            detected = time.perf_counter() - started
            break
        time.sleep(0.0005)
    if future.result(timeout=30) != 2.0:  # it ran again on another worker
        raise AssertionError(f"{NAME}: the call of the killed worker came back wrong")
    victim.kill()
    local.workers.remove(victim)
    ns = registry.connect(cluster.settings)
    try:
        registry.unregister_worker(ns, name)  # a SIGKILLed worker leaves its entries behind
    finally:
        ns._pyroRelease()
    return detected


def thread_costs(meter: Meter, paths: list[str]) -> str:
    """The threads of ``paths`` that used CPU or woke up, by name, busiest first."""
    names = {f"/proc/{os.getpid()}/task/{t.native_id}": t.name for t in threading.enumerate()}
    used = sorted(
        ((meter.each[p], names.get(p, p.rsplit("/", 1)[-1])) for p in paths), key=lambda u: -u[0].cpu_s
    )
    return ", ".join(
        f"{name} {u.per_s()[0]:.1f} ms/s {u.per_s()[1]:.0f}/s" for u, name in used if u.cpu_s or u.wakeups
    )


def listing_times(cluster: Any, reps: int = 5) -> list[float]:
    """Milliseconds of one name-server listing of every worker (what a discovery pass asks)."""
    from pyrocluster.nameserver import registry

    ns = registry.connect(cluster.settings)
    try:
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            registry.find_workers(ns)
            out.append((time.perf_counter() - t0) * 1000)
        return out
    finally:
        ns._pyroRelease()


def measure(ctx: Context, local: Any, count: int, items: int, reps: int) -> Point:
    """Every figure at one worker count, with a coordinator of its own."""
    from pyrocluster.coordinator import calls
    from pyrocluster.coordinator.cluster import Cluster

    gc.collect()  # the previous point's calls and futures must not cost this one a full collection
    point = Point(count)
    groups = {
        "workers": processes([p.pid for p in local.workers]),
        "nameserver": processes([local.nameserver.pid]),
    }
    base = settled_threads()
    cluster = Cluster(local.address)
    try:
        deadline = time.monotonic() + 20
        while cluster.capacity("compute") < count and time.monotonic() < deadline:
            time.sleep(0.05)
        point.threads_idle = live_threads() - base
        for r in range(reps + 1):
            wall, proc = run_cli(["status", "--json", "--ns", local.address])
            if proc.returncode != 0:
                raise AssertionError(f"status --json exited {proc.returncode}: {proc.stderr.strip()}")
            doc = json.loads(proc.stdout)
            t0 = time.perf_counter()
            status = cluster.status()
            inproc = time.perf_counter() - t0
            if r == 0:
                continue  # warm-up: page cache, first connections
            point.status_cli.append(wall)
            point.status_inproc.append(inproc)
            point.listed = min(len(doc["workers"]), point.listed or count)
        point.worker_rss = [w["rss_mb"] for w in status["workers"]]

        args = [(i, i) for i in range(items)]
        expected = [2 * i for i in range(items)]
        # A connection to every worker: calls that take real time spread one to each free slot
        # (cheap ones ride in a few full batches and reach only a few workers). Without this the
        # measured maps paid each worker's first contact, which the 2-worker reference had not.
        list(starmap(cluster, "sleep", [(0.05,)] * count))
        list(starmap(cluster, "add", args[: 4 * count]))  # batch sizes learnt
        point.listing_ms = listing_times(cluster)
        time.sleep(0.5)  # the warm-up's replies and probes settle
        groups["coordinator"] = threads_here(BENCH_THREADS)  # its threads and this one (submitting)
        with Meter(groups) as idle:
            time.sleep(IDLE_S)
        point.idle = idle.usage
        point.idle_threads = thread_costs(idle, groups["coordinator"])
        first_batch = next(calls._batch_ids)
        with PeakSampler(base) as peak, Meter(groups) as used, Collections() as collected:
            for r in range(reps + 1):
                t0 = time.perf_counter()
                results = list(starmap(cluster, "add", args))
                rate = items / (time.perf_counter() - t0)
                if results != expected:
                    raise AssertionError(f"{NAME}: map over {count} workers: wrong results")
                if r:
                    point.map_rates.append(rate)
        point.threads_map, point.rss_mb = peak.threads, peak.rss_mb
        point.map_use = used.usage
        point.map_gc = collected
        point.batches_per_map = (next(calls._batch_ids) - first_batch - 1) / (reps + 1)

        first_batch = next(calls._batch_ids)
        with PeakSampler(base) as peak, Meter(groups) as used:
            t0 = time.perf_counter()
            futures = [cluster.submit("add", i, i) for i in range(items)]
            wait(futures)
            point.submit_rate = items / (time.perf_counter() - t0)
        point.submit_batches = next(calls._batch_ids) - first_batch - 1
        point.submit_use = used.usage
        if any(f.result() != 2 * i for i, f in enumerate(futures)):
            raise AssertionError(f"{NAME}: submits over {count} workers: wrong results")
        point.share = Counter(str(f.worker) for f in futures)
        point.threads_submit, point.rss_mb = peak.threads, max(point.rss_mb, peak.rss_mb)
        slow = [cluster.submit("sleep", SPREAD_SLEEP_S) for _ in range(SPREAD_PER_WORKER * count)]
        wait(slow)
        point.spread = Counter(str(f.worker) for f in slow)

        point.kill_s = kill_detection(cluster, local)
    finally:
        cluster.close()
    ctx.log(
        f"{NAME}: {count} workers: status --json {statistics.median(point.status_cli):.3f} s, "
        f"map {statistics.median(point.map_rates):,.0f}/s, submits {point.submit_rate:,.0f}/s, "
        f"threads {point.threads_idle}/{point.threads_map}/{point.threads_submit}, "
        f"kill seen in {point.kill_s if point.kill_s is None else round(point.kill_s * 1000, 1)} ms"
    )
    return point


def import_floor(reps: int) -> list[float]:
    """Wall seconds of ``python -c 'import pyrocluster.cli'``: the start-up of any command."""
    return import_cli(reps)[0]


def run(ctx: Context) -> None:
    """Measure the curve and add its rows and targets."""
    from pyrocluster.local import LocalCluster

    counts = sorted({REFERENCE, *ctx.sizes.scale_workers})
    items = ctx.sizes.scale_items
    reps = min(ctx.sizes.reps, 3)
    ctx.log(f"{NAME}: worker counts {counts} ({' '.join(WORKER_ARGS)}), {items} tasks, {reps} reps")
    points: list[Point] = []
    local = LocalCluster(0, WORKER_ARGS)
    try:
        for count in counts:
            grow(ctx, local, count)
            points.append(measure(ctx, local, count, items, reps))
    finally:
        ctx.log(f"{NAME}: stopping {len(local.workers)} workers")
        local.close()
    report(ctx, points, import_floor(ctx.sizes.reps))


def report(ctx: Context, points: list[Point], floor: list[float]) -> None:
    """Rows grouped by measurement along the curve, each with its ratio to 2 workers; the targets."""
    rep = ctx.report
    ref = next(p for p in points if p.workers == REFERENCE)
    top = points[-1]

    def vs(value: float, reference: float) -> str:
        return f"{value / reference:.2f}x of {REFERENCE} workers" if reference else ""

    for p in points:
        role = PYRO if p is top else INFO
        rep.add(
            NAME,
            f"`pyrocluster status --json`, {p.workers} workers (subprocess, incl. interpreter start)",
            role,
            "s",
            p.status_cli,
            short=f"status --json ({p.workers})",
        )
    for p in points:
        rep.add(NAME, f"cluster.status() in process, {p.workers} workers", INFO, "s", p.status_inproc)
    rep.add(NAME, "`python -c 'import pyrocluster.cli'` (start-up floor of any command)", BASE, "s", floor)
    map_ref = statistics.median(ref.map_rates)
    for p in points:
        m = statistics.median(p.map_rates)
        rep.add(
            NAME,
            f"Cluster.map, {ctx.sizes.scale_items} add, {p.workers} workers",
            INFO,
            "tasks/s",
            p.map_rates,
            note=vs(m, map_ref),
        )
    for p in points:
        rep.add(
            NAME,
            f"{ctx.sizes.scale_items} single cluster.submit, {p.workers} workers",
            INFO,
            "tasks/s",
            [p.submit_rate],
            note=vs(p.submit_rate, ref.submit_rate),
        )
    for p in points:
        rep.add(
            NAME,
            f"coordinator threads, {p.workers} workers (peak)",
            INFO,
            "threads",
            [p.threads],
            note=f"idle {p.threads_idle}, map {p.threads_map}, submits {p.threads_submit}",
        )
    for p in points:
        rep.add(NAME, f"coordinator process peak RSS, {p.workers} workers", INFO, "MB", [p.rss_mb])
    for p in points:
        rep.add(
            NAME,
            f"SIGKILLed worker set aside after, {p.workers} workers",
            INFO,
            "ms",
            [] if p.kill_s is None else [p.kill_s * 1000],
        )
    costs(ctx, points)
    rss = top.worker_rss
    rep.add(
        "Memory",
        f"idle thread-pool worker RSS ({top.workers} workers, status rss_mb)",
        INFO,
        "MB",
        [statistics.median(rss)],
        note=f"min {min(rss):.1f}, max {max(rss):.1f}",
    )
    for p in points:
        got = sorted(p.share.values()) + [0] * (p.workers - len(p.share))
        rep.note(
            NAME,
            f"{p.workers} workers: status --json listed {p.listed}; submits reached {len(p.share)} of "
            f"{p.workers} workers in {p.submit_batches} batches (per worker min {min(got)}, "
            f"median {statistics.median(got):.0f}, "
            f"max {max(got)}, fair share {ctx.sizes.scale_items / p.workers:.0f}); "
            f"{SPREAD_PER_WORKER * p.workers} calls of sleep({SPREAD_SLEEP_S}) reached {len(p.spread)}",
        )

    rep.target(
        f"status --json with {top.workers} workers",
        "wall <= 1 s, every worker listed",
        "<=",
        1.0,
        statistics.median(top.status_cli),
        also=top.listed == top.workers,
        detail=f"{top.listed} listed; cluster.status() {statistics.median(top.status_inproc):.3f} s",
    )
    at64 = next((p for p in points if p.workers == 64), None)
    if at64 is not None:  # the 64-worker target
        rep.target(
            "status --json with 64 workers",
            "wall < 1 s, and every worker gets a share of calls that take real time",
            "<",
            1.0,
            statistics.median(at64.status_cli),
            also=len(at64.spread) == 64 and at64.listed == 64,
            detail=f"{len(at64.spread)}/64 workers ran some of {SPREAD_PER_WORKER * 64} calls of "
            f"sleep({SPREAD_SLEEP_S}); the {ctx.sizes.scale_items} single submits of add reached "
            f"{len(at64.share)} ({at64.submit_batches} batches: cheap calls keep to a few workers)",
        )
    rep.target(
        f"map throughput, {top.workers} workers vs {REFERENCE}",
        "ratio >= 0.8",
        ">=",
        0.8,
        statistics.median(top.map_rates) / map_ref,
        detail=f"{statistics.median(top.map_rates):,.0f} vs {map_ref:,.0f} tasks/s",
    )
    rep.target(
        f"single-submit throughput, 64 workers vs {REFERENCE}",
        "ratio >= 0.8",
        ">=",
        0.8,
        None if at64 is None else at64.submit_rate / ref.submit_rate,
        detail="" if at64 is None else f"{at64.submit_rate:,.0f} vs {ref.submit_rate:,.0f} tasks/s",
    )
    curve = [p for p in points if p.workers != REFERENCE] or points
    spread = max(p.threads for p in curve) - min(p.threads for p in curve)
    rep.target(
        f"coordinator threads flat over {curve[0].workers}-{curve[-1].workers} workers",
        f"peak threads differ by <= {THREADS_FLAT} along the curve",
        "<=",
        THREADS_FLAT,
        spread,
        detail=", ".join(f"{p.workers}: {p.threads}" for p in points),
    )


def per_task_us(use: dict[str, Usage], name: str, tasks: int) -> float:
    """CPU microseconds of group ``name`` per task over a window that ran ``tasks`` tasks."""
    return use[name].cpu_s * 1e6 / tasks if name in use and tasks else 0.0


def costs(ctx: Context, points: list[Point]) -> None:
    """The per-worker cost rows (kernel counters, load-independent) and one note per point."""
    rep = ctx.report
    items = ctx.sizes.scale_items
    reps = len(points[0].map_rates) + 1
    for p in points:
        cpu_ms, wake = p.idle["workers"].per_s(p.workers)
        rep.add(
            NAME,
            f"idle worker CPU, {p.workers} workers (per worker)",
            INFO,
            "ms/s",
            [cpu_ms],
            note=f"{wake:.2f} wake-ups/s per worker",
        )
    for p in points:
        cpu_ms, wake = p.idle["coordinator"].per_s()
        rep.add(
            NAME,
            f"idle coordinator CPU, {p.workers} workers",
            INFO,
            "ms/s",
            [cpu_ms],
            note=f"{wake:.1f} wake-ups/s; name server {p.idle['nameserver'].per_s()[0]:.1f} ms/s",
        )
    for p in points:
        rep.add(
            NAME,
            f"coordinator CPU per map task, {p.workers} workers",
            INFO,
            "us",
            [per_task_us(p.map_use, "coordinator", items * reps)],
            note=f"workers {per_task_us(p.map_use, 'workers', items * reps):.1f} us; "
            f"{p.batches_per_map:.1f} batches a map; garbage collector {gc_share(p, items * reps)}",
        )
    for p in points:
        rep.add(
            NAME,
            f"coordinator CPU per single submit, {p.workers} workers",
            INFO,
            "us",
            [per_task_us(p.submit_use, "coordinator", items)],
            note=f"workers {per_task_us(p.submit_use, 'workers', items):.1f} us",
        )
    for p in points:
        rep.note(NAME, f"{p.workers} workers: idle coordinator threads: {p.idle_threads}")
    for p in points:
        rep.add(
            NAME,
            f"name-server listing of every worker (a discovery pass), {p.workers} workers",
            INFO,
            "ms",
            p.listing_ms,
        )


def gc_share(p: Point, tasks: int) -> str:
    """The collector's time per task during the maps, and what it walked."""
    if p.map_gc is None or not tasks:
        return "-"
    per_task = p.map_gc.seconds * 1e6 / tasks
    return f"{per_task:.1f} us ({p.map_gc.full} full, {p.map_gc.tracked:,} objects at start)"
