"""``python -m bench.dashboard_workflow``: ``/api/dashboard`` response time while a 20,000-task
workflow runs, against the same page with a plain 20,000-task job (no graph) in the same run.

Real parts: a real name server, a real ``pyrocluster dashboard`` process, 8 worker control
objects with real counters and task stats (``bench.dashboard.FakeWorkers``), and a real
``JobProgress`` whose snapshot carries the real ``Workflow`` graph view of a job with a
20,000-item map, 12,000 of its items already counted (the job itself runs no task).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.dashboard import Bench
from pyrocluster.auth import SecureDaemon
from pyrocluster.config import Settings
from pyrocluster.jobs.announce import JobProgress
from pyrocluster.jobs.spec import load_job
from pyrocluster.jobs.workflow import Workflow
from pyrocluster.nameserver import registry

ITEMS = 20_000
COUNTED = 12_000


def workflow_job(directory: Path) -> Workflow:
    """A running workflow: a 20,000-item map, a step on one of its items, a last step after that."""
    items = ", ".join(f"[{i}, {i}]" for i in range(ITEMS))
    path = directory / "big.yaml"
    path.write_text(
        "name: big\ntasks:\n"
        f"  - {{id: m, call: add, map: [{items}]}}\n"
        "  - {id: n, call: add, args: [{$result: m-0}, 1]}\n"
        "  - {id: total, call: add, args: [{$result: n}, 1]}\n"
    )
    flow = Workflow(load_job(path), {}, lambda records: None)
    flow._tally([{"id": f"m-{i}", "status": "ok" if i % 50 else "failed"} for i in range(COUNTED)])
    return flow


def snapshot(name: str, graph: Any) -> dict[str, Any]:
    done = COUNTED
    snap = {"name": name, "total": ITEMS + 2, "done": done, "ok": done - done // 50, "failed": done // 50,
            "rate": 900.0, "in_flight": 64, "failures_seen": done // 50}  # fmt: skip
    return {**snap, "graph": graph()} if graph else snap


def announce(settings: Settings, ns: Any, name: str, graph: Any) -> Any:
    daemon = SecureDaemon(settings, host="127.0.0.1", port=0)
    job_id = f"{name}@bench-{os.getpid()}-{int(time.time() * 1000)}"
    uri = str(daemon.register(JobProgress(job_id, lambda: snapshot(name, graph))))
    registry.register_job(ns, job_id, uri)
    threading.Thread(target=daemon.requestLoop, daemon=True).start()
    return daemon, job_id


def timed(client: httpx.Client, url: str, requests: int) -> list[float]:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        client.get(url + "/api/dashboard").raise_for_status()
        times.append(1000 * (time.perf_counter() - started))
    return sorted(times)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.dashboard_workflow", description=__doc__)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    bench = Bench.start(args.workers)
    settings, ns, url = bench.settings, bench.ns, bench.url
    daemons = []
    try:
        client = httpx.Client(timeout=5)
        results = {}
        with tempfile.TemporaryDirectory() as directory:
            flow = workflow_job(Path(directory))
            for label, graph in (("plain 20,000-task job", None), ("20,000-task workflow", flow.view)):
                daemon, job_id = announce(settings, ns, label.split()[0], graph)
                daemons.append(daemon)
                while not any(j.get("id") == job_id for j in client.get(url + "/api/status").json()["jobs"]):
                    time.sleep(0.2)
                results[label] = (
                    timed(client, url, args.requests),
                    len(client.get(url + "/api/dashboard").content),
                )
                registry.unregister_job(ns, job_id)
                while any(j.get("id") == job_id for j in client.get(url + "/api/status").json()["jobs"]):
                    time.sleep(0.2)
        load = os.getloadavg()[0]
        print(f"/api/dashboard, {args.workers} workers, {args.requests} requests, load {load:.1f}:")
        base = statistics.median(results["plain 20,000-task job"][0])
        for label, (times, size) in results.items():
            median, p95 = statistics.median(times), times[int(0.95 * len(times))]
            ratio = median / base
            print(f"  {label:<24} median {median:6.2f} ms  p95 {p95:6.2f} ms  {size:,} bytes  ({ratio:.2f}x)")
    finally:
        for daemon in daemons:
            daemon.shutdown()
        bench.stop()


if __name__ == "__main__":
    main()
