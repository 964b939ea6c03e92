"""W2 CPU: ~180 ``count_primes`` tasks of ~50 ms each, wall seconds.

pyrocluster: ``Cluster.map`` on two workers of one slot each (``--concurrency 1``, process
slots). Ceiling: two warm processes that split the list statically, half each, with no
communication on the way (``Pool(2).starmap(..., chunksize=ceil(n / 2))``). And a serial loop.
The range width is calibrated at the start so that one task takes about ``w2_task_s`` here.
"""

from __future__ import annotations

import math
import statistics
import time

from bench.common import Context
from bench.report import BASE, INFO, PYRO
from pyrocluster.tasks import count_primes

NAME = "W2 CPU"
BASE_LO = 10**10
"""Ranges start here: so far out that the n ranges cost the same (sqrt(hi) hardly moves)."""


def task_time(width: int, k: int, reps: int = 5) -> float:
    """Fastest of ``reps`` runs of task ``k`` (the minimum: other load on the machine only adds)."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        count_primes(BASE_LO + k * width, BASE_LO + (k + 1) * width)
        times.append(time.perf_counter() - start)
    return min(times)


def calibrate(target_s: float, n: int) -> tuple[int, float, float]:
    """A width whose tasks take about ``target_s`` here; its first and last task's times."""
    width = 1_000_000
    for _ in range(8):
        t = task_time(width, n // 2)
        if abs(t - target_s) / target_s < 0.03:
            break
        width = max(1000, int(width * target_s / t))
    return width, task_time(width, 0), task_time(width, n - 1)


def run(ctx: Context) -> None:
    """Measure W2 and add its rows and target."""
    from pyrocluster.coordinator.cluster import Cluster

    n = ctx.sizes.w2_tasks
    width, first_s, last_s = calibrate(ctx.sizes.w2_task_s, n)
    per_task = (first_s + last_s) / 2
    items = [(BASE_LO + k * width, BASE_LO + (k + 1) * width) for k in range(n)]
    ctx.log(f"{NAME}: {n} tasks of count_primes width {width:,} (~{per_task * 1000:.0f} ms each here)")
    ctx.log(f"{NAME}: starting a local cluster: 2 workers, --concurrency 1 (process slots)")
    cluster = Cluster.local(workers=2, worker_args=["--concurrency", "1"])
    pool = ctx.pool(2)
    half = math.ceil(n / 2)
    expected: list[int] | None = None
    pyro: list[float] = []
    ceiling: list[float] = []
    serial: list[float] = []
    busy_share: list[float] = []

    def task_ms() -> float:
        """Milliseconds of task run time the workers have recorded so far (done x mean)."""
        return sum(w["done"] * w["mean_ms"] for w in cluster.status()["workers"])

    try:
        list(cluster.starmap("count_primes", items[:4]))  # warm-up: connections, slot processes
        pool.starmap(count_primes, items[:4], chunksize=2)
        for r in range(ctx.sizes.reps):
            before = task_ms()
            start = time.perf_counter()
            got = list(cluster.starmap("count_primes", items))
            pyro.append(time.perf_counter() - start)
            busy_share.append((task_ms() - before) / 1000 / (2 * pyro[-1]))
            start = time.perf_counter()
            static = pool.starmap(count_primes, items, chunksize=half)
            ceiling.append(time.perf_counter() - start)
            if r < ctx.sizes.w2_serial_reps:
                start = time.perf_counter()
                expected = [count_primes(lo, hi) for lo, hi in items]
                serial.append(time.perf_counter() - start)
            if got != static or (expected is not None and got != expected):
                raise AssertionError(f"{NAME}: results differ between pyrocluster and the baselines")
            ctx.log(
                f"  rep {r + 1}/{ctx.sizes.reps}: pyrocluster {pyro[-1]:.3f} s, ceiling {ceiling[-1]:.3f} s"
                + (f", serial {serial[-1]:.3f} s" if r < ctx.sizes.w2_serial_reps else "")
            )
        shares = {}
        for w in cluster.status()["workers"]:
            shares[w["name"]] = w["done"]
    finally:
        cluster.close()
    rep = ctx.report
    rep.add(
        NAME,
        f"calibrated task: count_primes over {width:,} numbers (first, last task)",
        INFO,
        "ms/task",
        [first_s * 1000, last_s * 1000],
    )
    pr = rep.add(NAME, "Cluster.map, 2 workers x 1 slot", PYRO, "s", pyro)
    base = rep.add(NAME, "2 processes, static halves (the ceiling)", BASE, "s", ceiling)
    rep.add(NAME, "serial loop in this process", BASE, "s", serial)
    rep.add(
        NAME,
        "share of the map's wall time the 2 slots spent running tasks",
        INFO,
        "%",
        [100 * b for b in busy_share],
    )
    paired = statistics.median(p / c for p, c in zip(pyro, ceiling, strict=True))
    rep.note(NAME, f"tasks done per worker (warm-up included): {sorted(shares.values())}")
    rep.target(
        "W2 CPU vs the static two-process ceiling",
        "time ratio <= 1.05",
        "<=",
        1.05,
        rep.ratio(pr, base),
        detail=f"best-of-n {rep.best_ratio(pr, base) or 0:.2f}x; median of per-repetition ratios "
        f"{paired:.2f}x; slots busy {statistics.median(busy_share):.0%} of the wall time",
    )
