"""Memory: the coordinator's peak RSS for a ``Cluster.map`` over N ``add`` items, and idle worker RSS.

The coordinator runs alone in a child process (``python -m bench.memory NS N``) so that its
peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``) is its own. Items come from a generator: the
figure is what the coordinator holds, not the caller's list. Idle worker RSS comes from
``status --json`` (``rss_mb``: a worker plus its slot processes).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from bench.common import REPO_ROOT, Context
from bench.report import INFO, PYRO

NAME = "Memory"


def child(ns: str, n: int) -> None:
    """Body of the child: connect, map, print what it measured as one JSON line."""
    import resource

    import psutil

    from pyrocluster.coordinator.cluster import Cluster

    me = psutil.Process()
    with Cluster(ns) as cluster:
        list(cluster.starmap("add", [(i, i) for i in range(100)]))
        before_mb = me.memory_info().rss / 1e6
        start = time.perf_counter()
        total = 0
        for value in cluster.starmap("add", ((i, i) for i in range(n))):
            total += value
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if total != n * (n - 1):
        raise SystemExit(f"wrong sum {total}")
    print(json.dumps({"before_mb": before_mb, "peak_mb": peak_mb, "wall_s": wall}), flush=True)


def run(ctx: Context) -> None:
    """Measure Memory and add its rows and target."""
    n = ctx.sizes.memory_items
    cluster = ctx.default_cluster()
    idle = [w["rss_mb"] for w in cluster.status()["workers"]]
    reps = 2 if not ctx.report.quick else 1
    results = []
    for r in range(reps):
        ctx.log(
            f"{NAME}: coordinator alone in a child process, Cluster.map over {n:,} items ({r + 1}/{reps})"
        )
        proc = subprocess.run(
            [sys.executable, "-m", "bench.memory", cluster.address, str(n)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            raise AssertionError(f"{NAME} child failed: {proc.stderr.strip()[-2000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        ctx.log(f"  peak {results[-1]['peak_mb']:.0f} MB, {results[-1]['wall_s']:.1f} s")
    rep = ctx.report
    peak = rep.add(
        NAME,
        f"coordinator peak RSS, Cluster.map over {n:,} items",
        PYRO,
        "MB",
        [r["peak_mb"] for r in results],
        short="peak",
    )
    rep.add(
        NAME,
        "coordinator RSS before that map (imports, cluster connected)",
        INFO,
        "MB",
        [r["before_mb"] for r in results],
    )
    rep.add(
        NAME, f"  that map's throughput ({n:,} items)", INFO, "tasks/s", [n / r["wall_s"] for r in results]
    )
    rep.add(
        NAME,
        "idle default worker RSS (worker + 2 slot processes, status rss_mb)",
        INFO,
        "MB",
        [statistics.median(idle)],
        note=f"workers: {', '.join(f'{x:.1f}' for x in idle)}",
    )
    rep.target(f"coordinator peak RSS for a {n:,}-item map", "< 250 MB", "<", 250.0, peak.median)


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]))
