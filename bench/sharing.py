"""Several jobs on one cluster: three figures, printed as a small table.

1. Two identical W1 jobs (20,000 ``add`` each, ``pyrocluster submit`` subprocesses) at once on
   ``Cluster.local(workers=2)``: aggregate tasks/s against one such job alone (goal >= 0.9x).
2. Start latency of one ``priority: 10`` call submitted by a second coordinator while a first
   one saturates the cluster with 0.2 s tasks (goal <= one task's duration + 50 ms).
3. Time from ``cluster.cancel`` of running 30 s process-slot tasks to the worker reporting its
   slots free (``control.load()``; goal <= 2 s).

``python -m bench.sharing [--reps N]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.w1_tiny import write_job

TASKS = str(Path(__file__).resolve().parent.parent / "tests" / "helpers" / "testtasks.py")


def submit(job: Path, ns: str, out: Path) -> subprocess.Popen[str]:
    """``pyrocluster submit`` in the background, summary as JSON."""
    cmd = [sys.executable, "-m", "pyrocluster", "submit", str(job), "--ns", ns, "--quiet", "--json"]
    return subprocess.Popen([*cmd, "--out", str(out)], stdout=subprocess.PIPE, text=True)


def wall(proc: subprocess.Popen[str]) -> float:
    """The job's own wall time from its JSON summary."""
    stdout, _ = proc.communicate(timeout=300)
    return float(json.loads(stdout)["wall_s"])


def two_jobs(ns: str, tmp: Path, n: int, reps: int) -> tuple[float, float]:
    """(one job alone, two at once) in tasks/s, medians."""
    job = tmp / "w1.yaml"
    write_job(job, n)
    alone, together = [], []
    wall(submit(job, ns, tmp / "warm.jsonl"))
    for _ in range(reps):
        alone.append(n / wall(submit(job, ns, tmp / "alone.jsonl")))
        pair = [submit(job, ns, tmp / f"pair{k}.jsonl") for k in range(2)]
        together.append(2 * n / max(wall(p) for p in pair))
    return statistics.median(alone), statistics.median(together)


def priority_latency(cluster_a: Any, cluster_b: Any, reps: int) -> float:
    """Median seconds from a priority-10 submission to its start on a saturated cluster."""
    stop = threading.Event()

    def saturate() -> None:
        while not stop.is_set():
            list(cluster_a.map("sleep", [0.2] * 8))

    filler = threading.Thread(target=saturate, daemon=True)
    filler.start()
    time.sleep(1.0)
    latencies = []
    for _ in range(reps):
        time.sleep(0.3)
        submitted = time.time()
        started = cluster_b.options(priority=10).submit("interval", 0.0).result(timeout=30)[1]
        latencies.append(started - submitted)
    stop.set()
    filler.join(timeout=10)
    return statistics.median(latencies)


def cancel_to_free(cluster: Any, control: Any, reps: int) -> float:
    """Median seconds from cancelling running process-slot tasks to the worker's slots being free."""
    times = []
    for _ in range(reps):
        futures = [cluster.submit("sleep", 30) for _ in range(2)]
        while control.load()["running"] < 2:
            time.sleep(0.01)
        time.sleep(0.2)
        asked = time.monotonic()
        for f in futures:
            cluster.cancel(f)
        while control.load()["running"] > 0:
            time.sleep(0.005)
        times.append(time.monotonic() - asked)
    return statistics.median(times)


def main() -> None:
    """Run the three measurements and print them."""
    ap = argparse.ArgumentParser(prog="python -m bench.sharing", description=__doc__)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--items", type=int, default=20_000)
    args = ap.parse_args()

    from pyrocluster.auth import make_proxy
    from pyrocluster.coordinator.cluster import Cluster

    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp, Cluster.local(workers=2) as local:
        alone, together = two_jobs(local.address, Path(tmp), args.items, args.reps)
        rows.append(
            ("two W1 jobs at once, aggregate", f"{together:,.0f} tasks/s", f"{together / alone:.2f}x")
        )
        rows.append(("one W1 job alone", f"{alone:,.0f} tasks/s", "goal >= 0.9x"))
    worker_args = ["--concurrency", "2", "--tasks", TASKS]
    with Cluster.local(workers=1, worker_args=worker_args) as first, Cluster(first.address) as second:
        latency = priority_latency(first, second, args.reps * 3)
        rows.append(("priority-10 submission to start", f"{latency * 1000:.0f} ms", "goal <= 250 ms"))
        entry = next(iter(first._dispatcher.records.values())).entry
        control = make_proxy(entry.uris["control"], first.settings, timeout_s=5)
        freed = cancel_to_free(first, control, args.reps)
        control._pyroRelease()
        rows.append(("cancel to free slots (process)", f"{freed:.2f} s", "goal <= 2 s"))
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>16}  {note}")


if __name__ == "__main__":
    main()
