"""Scale: many workers on loopback (one slot each, thread pool, compute only).

Measures ``pyrocluster status --json`` as a subprocess (what a user waits for, interpreter
start included) and ``cluster.status()`` in this process, and how the calls of an N-task run
spread: every call goes through ``cluster.submit`` and is counted by ``future.worker``.
The idle RSS of these thread-pool workers is reported too (Memory).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import wait

from bench.common import REPO_ROOT, Context, run_cli
from bench.report import BASE, INFO, PYRO

NAME = "Scale"
WAVE = 16
"""Workers started at once (64 interpreters importing at once on 2 cores would trip the ready timeout)."""
WORKER_ARGS = ["--concurrency", "1", "--pool", "thread", "--services", "compute"]


def run(ctx: Context) -> None:
    """Measure Scale and add its rows and target."""
    import subprocess

    from pyrocluster.coordinator.cluster import Cluster
    from pyrocluster.local import LocalCluster

    workers = ctx.sizes.scale_workers
    n = ctx.sizes.scale_items
    reps = ctx.sizes.reps
    ctx.log(f"{NAME}: starting {workers} workers ({' '.join(WORKER_ARGS)}) in waves of {WAVE}")
    start = time.perf_counter()
    local = LocalCluster(0, WORKER_ARGS)
    cluster = None
    try:
        for first in range(0, workers, WAVE):
            procs = [local.add_worker(wait=False) for _ in range(first, min(workers, first + WAVE))]
            for p in procs:
                p.wait_ready()
        started_s = time.perf_counter() - start
        ctx.log(f"{NAME}: {workers} workers ready in {started_s:.1f} s")
        cluster = Cluster(local.address)
        deadline = time.monotonic() + 10
        while len(cluster.status()["workers"]) < workers and time.monotonic() < deadline:
            time.sleep(0.2)

        cli: list[float] = []
        inproc: list[float] = []
        imports: list[float] = []
        seen: list[int] = []
        ready: list[int] = []
        for r in range(reps + 1):
            wall, proc = run_cli(["status", "--json", "--ns", local.address])
            if proc.returncode != 0:
                raise AssertionError(f"status --json exited {proc.returncode}: {proc.stderr.strip()}")
            doc = json.loads(proc.stdout)
            t0 = time.perf_counter()
            status = cluster.status()
            t1 = time.perf_counter()
            t_imp = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import pyrocluster.cli"], cwd=REPO_ROOT, check=True)
            t_imp = time.perf_counter() - t_imp
            if r == 0:
                continue  # warm-up: page cache, first connections
            cli.append(wall)
            inproc.append(t1 - t0)
            imports.append(t_imp)
            seen.append(len(doc["workers"]))
            ready.append(sum(1 for w in status["workers"] if w["state"] == "ready"))
        ctx.log(
            f"{NAME}: status --json {statistics.median(cli):.3f} s, cluster.status() "
            f"{statistics.median(inproc):.3f} s, {min(seen)} workers listed"
        )
        rss = [w["rss_mb"] for w in status["workers"]]

        ctx.log(f"{NAME}: {n} calls through cluster.submit, counting future.worker")
        list(cluster.starmap("add", [(i, i) for i in range(2 * workers)]))  # warm-up: every link connected
        t0 = time.perf_counter()
        futures = [cluster.submit("add", i, i) for i in range(n)]
        wait(futures)
        map_s = time.perf_counter() - t0
        if any(f.result() != 2 * i for i, f in enumerate(futures)):
            raise AssertionError(f"{NAME}: wrong results")
        share = Counter(f.worker for f in futures)
    finally:
        if cluster is not None:
            cluster.close()
        ctx.log(f"{NAME}: stopping {workers} workers")
        local.close()

    rep = ctx.report
    got = [share.get(w, 0) for w in share] + [0] * (workers - len(share))
    st = rep.add(
        NAME,
        f"`pyrocluster status --json`, {workers} workers (subprocess, incl. interpreter start)",
        PYRO,
        "s",
        cli,
        short="status --json",
    )
    rep.add(
        NAME, f"cluster.status() in process, {workers} workers", PYRO, "s", inproc, short="cluster.status()"
    )
    rep.add(NAME, "`python -c 'import pyrocluster.cli'` (start-up floor of any command)", BASE, "s", imports)
    rep.add(NAME, f"{n} calls via cluster.submit over {workers} workers", INFO, "tasks/s", [n / map_s])
    rep.add(NAME, f"{workers} workers started, in waves of {WAVE}", INFO, "s", [started_s])
    rep.add(
        "Memory",
        f"idle thread-pool worker RSS ({workers} workers, status rss_mb)",
        INFO,
        "MB",
        [statistics.median(rss)],
        note=f"min {min(rss):.1f}, max {max(rss):.1f}",
    )
    rep.note(
        NAME,
        f"status --json listed {min(seen)}-{max(seen)} of {workers} workers; cluster.status() saw "
        f"{min(ready)} ready",
    )
    rep.note(
        NAME,
        f"share of {n} submitted calls: {len(share)} of {workers} workers got work; per worker "
        f"min {min(got)}, median {statistics.median(got):.0f}, max {max(got)} (fair share {n / workers:.0f})",
    )
    every = len(share) == workers and min(got) > 0
    rep.target(
        f"status --json with {workers} workers",
        "wall < 1 s, and every worker gets a share of the run",
        "<",
        1.0,
        st.median,
        also=every and min(seen) == workers,
        detail=f"{len(share)}/{workers} workers got a share; in-process cluster.status() "
        f"{statistics.median(inproc):.3f} s",
    )
