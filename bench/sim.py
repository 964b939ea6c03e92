"""Sim: one coordinator against 1,000 fake workers (``bench.sim_worker``) in a few processes.

The fake workers are real Pyro5 objects on their own ports, registered in a real pyrocluster
name server and re-checking their registration every 5 s like real workers; only their task
runs instantly. This measures what a coordinator pays per worker at a count the machine could
not run as real processes:

* registration: the fake workers' own registration time, and a name-server ``list`` of every
  worker (what each discovery pass asks) while the heartbeats go on;
* discovery: from ``Cluster(...)`` to every worker usable, and a late group of workers joining;
* status: ``cluster.status()`` and ``pyrocluster status --json`` over every worker;
* probing: liveness calls the fakes received per second while work was in flight;
* dispatch: ``Cluster.map`` of N ``add`` (how many workers got a batch) and single submits;
* the coordinator's threads and RSS throughout.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from concurrent.futures import wait
from typing import Any

from bench.common import REPO_ROOT, Context, PeakSampler, run_cli, starmap
from bench.report import INFO, PYRO
from bench.scale import live_threads, settled_threads

NAME = "Sim"
PROCESSES = 4
"""Processes the fake workers are spread over."""
JOINERS = 50
"""Fake workers that join once the coordinator runs."""
THREAD_BOUND = 64
"""Most threads the coordinator may hold at this count for the simulation to count as holding."""
STATUS_LIMIT_S = 2.0
"""Longest ``cluster.status()`` over every fake worker for the simulation to count as holding."""


class SimProcess:
    """One ``python -m bench.sim_worker`` process."""

    def __init__(self, ns: str, count: int, prefix: str) -> None:
        self.count = count
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sim_worker", "--ns", ns, "--count", str(count), "--prefix", prefix],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.register_s = 0.0
        self.stats_uri = ""

    def wait_ready(self) -> None:
        """Read the ready line: registration seconds and the stats object's URI."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 3 or line[0] != "ready":
            self.stop()
            raise RuntimeError(f"bench.sim_worker did not start: {' '.join(line)!r}")
        self.register_s, self.stats_uri = float(line[1]), line[2]

    def stats(self, settings: Any, reset: bool = False) -> dict[str, Any]:
        """The process's counters (and zero them)."""
        from pyrocluster.auth import make_proxy

        proxy = make_proxy(self.stats_uri, settings, timeout_s=10)
        try:
            out = dict(proxy.stats())
            if reset:
                proxy.reset()
            return out
        finally:
            proxy._pyroRelease()

    def stop(self) -> None:
        """Close its stdin (it exits), kill it if it lingers."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def totals(procs: list[SimProcess], settings: Any, reset: bool = False) -> dict[str, Any]:
    """Counters summed over the processes."""
    calls: dict[str, int] = {}
    tasks = reached = 0
    for p in procs:
        s = p.stats(settings, reset)
        for k, v in s["calls"].items():
            calls[k] = calls.get(k, 0) + v
        tasks += s["tasks"]
        reached += s["workers_with_work"]
    return {"calls": calls, "tasks": tasks, "reached": reached}


def run(ctx: Context) -> None:
    """Run the simulation and add its rows and target."""
    from pyrocluster.config import Settings
    from pyrocluster.coordinator.cluster import Cluster
    from pyrocluster.local import start_nameserver
    from pyrocluster.nameserver import registry

    n = 200 if ctx.report.quick else 1000
    items = 5000 if ctx.report.quick else 20_000
    singles = items // 4
    reps = min(ctx.sizes.reps, 3)
    ctx.log(f"{NAME}: {n} fake workers in {PROCESSES} processes")
    ns_proc, address = start_nameserver()
    settings = Settings.from_sources(ns=address)
    procs: list[SimProcess] = []
    cluster = None
    rep = ctx.report
    try:
        t0 = time.perf_counter()
        procs = [SimProcess(address, n // PROCESSES, f"sim{i}") for i in range(PROCESSES)]
        for p in procs:
            p.wait_ready()
        start_s = time.perf_counter() - t0
        register_s = max(p.register_s for p in procs)

        listing: list[float] = []
        ns = registry.connect(settings)
        try:
            for _ in range(reps + 1):
                t0 = time.perf_counter()
                entries = registry.find_workers(ns)
                listing.append(time.perf_counter() - t0)
        finally:
            ns._pyroRelease()
        listing = listing[1:]
        if len(entries) != n:
            raise AssertionError(f"{NAME}: the name server lists {len(entries)} workers, expected {n}")

        base = settled_threads()
        with PeakSampler(base) as overall:
            t0 = time.perf_counter()
            cluster = Cluster(address)
            deadline = time.monotonic() + 60
            while cluster.capacity("compute") < n and time.monotonic() < deadline:
                time.sleep(0.01)
            discovery_s = time.perf_counter() - t0
            known = cluster.capacity("compute")
            threads_idle = live_threads() - base
            ctx.log(f"{NAME}: coordinator knows {known} workers after {discovery_s:.2f} s")

            status_in: list[float] = []
            status_cli: list[float] = []
            for r in range(reps + 1):
                t0 = time.perf_counter()
                doc = cluster.status()
                s_in = time.perf_counter() - t0
                wall, proc = run_cli(["status", "--json", "--ns", address])
                if proc.returncode != 0:
                    raise AssertionError(f"status --json exited {proc.returncode}: {proc.stderr.strip()}")
                if r:
                    status_in.append(s_in)
                    status_cli.append(wall)
            listed = len(doc["workers"])

            args = [(i, i) for i in range(items)]
            expected = [2 * i for i in range(items)]
            list(starmap(cluster, "add", args))  # warm-up: connections, batch sizes
            totals(procs, settings, reset=True)
            map_rates: list[float] = []
            map_wall = 0.0
            with PeakSampler(base) as during_map:
                for _ in range(reps):
                    t0 = time.perf_counter()
                    results = list(starmap(cluster, "add", args))
                    wall = time.perf_counter() - t0
                    map_wall += wall
                    if results != expected:
                        raise AssertionError(f"{NAME}: map: wrong results")
                    map_rates.append(items / wall)
            after_map = totals(procs, settings, reset=True)

            with PeakSampler(base) as during_submit:
                t0 = time.perf_counter()
                futures = [cluster.submit("add", i, i) for i in range(singles)]
                wait(futures)
                submit_rate = singles / (time.perf_counter() - t0)
            if any(f.result() != 2 * i for i, f in enumerate(futures)):
                raise AssertionError(f"{NAME}: submits: wrong results")
            submit_reached = len({f.worker for f in futures})

            joiner = SimProcess(address, JOINERS, "simjoin")
            procs.append(joiner)
            joiner.wait_ready()
            t0 = time.perf_counter()
            while cluster.capacity("compute") < n + JOINERS and time.perf_counter() - t0 < 30:
                time.sleep(0.01)
            join_s = time.perf_counter() - t0
    finally:
        if cluster is not None:
            cluster.close()
        for p in procs:
            p.stop()
        ns_proc.stop()

    probes = after_map["calls"].get("ping", 0) + after_map["calls"].get("load", 0)
    batches = after_map["calls"].get("run_batch", 0)
    rep.add(NAME, f"{n} fake workers: processes started and every worker registered", INFO, "s", [start_s])
    rep.add(
        NAME,
        f"  registration alone ({n // PROCESSES} workers a process, slowest process)",
        INFO,
        "s",
        [register_s],
    )
    rep.add(
        NAME, f"name-server list of {n} workers (one discovery pass; heartbeats running)", INFO, "s", listing
    )
    rep.add(NAME, f"discovery: Cluster() until all {n} workers usable", PYRO, "s", [discovery_s])
    rep.add(NAME, f"{JOINERS} more workers join: until the coordinator uses them", INFO, "s", [join_s])
    rep.add(NAME, f"cluster.status() over {n} workers", PYRO, "s", status_in)
    rep.add(NAME, f"`pyrocluster status --json` over {n} workers (subprocess)", INFO, "s", status_cli)
    rep.add(
        NAME,
        f"Cluster.map, {items} add over {n} workers",
        PYRO,
        "tasks/s",
        map_rates,
        note=f"{batches / reps:,.0f} batches a map, {after_map['reached']} workers reached",
    )
    rep.add(
        NAME,
        f"{singles} single cluster.submit over {n} workers",
        INFO,
        "tasks/s",
        [submit_rate],
        note=f"{submit_reached} workers reached",
    )
    rep.add(
        NAME,
        "liveness probes received by the fakes while maps ran",
        INFO,
        "calls/s",
        [probes / map_wall if map_wall else 0.0],
    )
    threads = max(threads_idle, during_map.threads, during_submit.threads)
    rep.add(
        NAME,
        f"coordinator threads, {n} workers (peak)",
        PYRO,
        "threads",
        [threads],
        note=f"idle {threads_idle}, map {during_map.threads}, submits {during_submit.threads}",
    )
    rep.add(
        NAME,
        "  peak while cluster.status() ran (every info() call out at once on the coordinator's wire)",
        INFO,
        "threads",
        [overall.threads],
    )
    rep.add(NAME, f"coordinator process peak RSS, {n} workers", INFO, "MB", [overall.rss_mb])
    holds = known >= n and listed == n and threads <= THREAD_BOUND
    rep.note(
        NAME,
        f"{known} of {n} workers known; status listed {listed}; the maps reached {after_map['reached']} "
        f"workers; {probes} probes and {batches} batches during {reps} maps",
    )
    rep.target(
        f"the coordinator holds {n} workers (simulation)",
        f"every worker known and listed, every call right, threads <= {THREAD_BOUND}, "
        f"cluster.status() <= {STATUS_LIMIT_S:g} s",
        "<=",
        STATUS_LIMIT_S,
        statistics.median(status_in),
        also=holds,
        detail=f"threads {threads}, {after_map['reached']}/{n} reached, map "
        f"{statistics.median(map_rates):,.0f} tasks/s, discovery {discovery_s:.2f} s",
    )
