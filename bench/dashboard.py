"""``python -m bench.dashboard``: the dashboard's /metrics scrape time with 64 workers, and its memory
after a fast-forwarded hour of one 20,000-task job a minute.

Real parts: a real name server, a real ``pyrocluster dashboard`` process, and 64 worker control objects
(each in a Pyro5 daemon of its own, with real ``WorkerState`` counters and task stats) in this process;
the jobs are real ``JobProgress`` objects and real finished-job records. Only time is fast-forwarded:
each simulated minute runs for ``--minute-s`` real seconds, and finished records carry the simulated
end times, so the dashboard prunes them exactly as it would after an hour.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import psutil

from pyrocluster import config
from pyrocluster.auth import SecureDaemon
from pyrocluster.config import Settings
from pyrocluster.jobs.announce import JobProgress
from pyrocluster.local import ManagedProcess, start_nameserver
from pyrocluster.nameserver import finished, registry
from pyrocluster.services.control import ControlService
from pyrocluster.services.state import WorkerState

TASK_NAMES = [f"task{i}" for i in range(20)]
TRACEBACK = (
    "Traceback (most recent call last):\n" + '  File "job.py", line 1, in f\n' * 60 + "ValueError: x\n"
)


class FakeWorkers:
    """``n`` worker control objects, one Pyro5 daemon each, registered like real workers."""

    def __init__(self, settings: Settings, ns: Any, n: int) -> None:
        self.daemons: list[Any] = []
        self.states: list[WorkerState] = []
        for i in range(n):
            state = WorkerState(f"bench-w{i:02d}", ["compute"], [], 4, "thread")
            state.tasks = list(TASK_NAMES)  # type: ignore[attr-defined]
            for k, name in enumerate(TASK_NAMES):
                state.task_stats.add([name] * 50, [[0, None, float(k + 1)]] * 48 + [[1, {}, 2.0]] * 2)
            state.done, state.failed = 960, 40
            daemon = SecureDaemon(settings, host="127.0.0.1", port=0)
            uri = str(
                daemon.register(ControlService(state), objectId=registry.object_name(state.name, "control"))
            )
            state.address = uri.rpartition("@")[2]
            registry.register_worker(ns, state.name, {"compute": uri, "control": uri}, {"compute": 4}, [])
            threading.Thread(target=daemon.requestLoop, daemon=True).start()
            self.daemons.append(daemon)
            self.states.append(state)

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.shutdown()


@dataclass
class Bench:
    """A real name server, ``n`` fake workers and a real dashboard process, for one benchmark."""

    settings: Settings
    ns_proc: ManagedProcess
    ns: Any
    workers: FakeWorkers
    dash: ManagedProcess
    url: str

    @classmethod
    def start(cls, workers: int) -> Bench:
        """Start them all (no secret: loopback only)."""
        settings = Settings()
        config.apply(settings)
        ns_proc, address = start_nameserver()
        settings = settings.with_ns(address)
        ns = registry.connect(settings)
        fakes = FakeWorkers(settings, ns, workers)
        dash = ManagedProcess(["dashboard", "--ns", address, "--port", "0"])
        url = next(w for w in dash.wait_ready().split() if w.startswith("http://")).rstrip("/")
        return cls(settings, ns_proc, ns, fakes, dash, url)

    def stop(self) -> None:
        """Stop the dashboard, the workers and the name server."""
        self.dash.stop()
        self.workers.close()
        self.ns._pyroRelease()
        self.ns_proc.stop()


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--scrapes", type=int, default=50)
    ap.add_argument("--minutes", type=int, default=60, help="simulated minutes (one job each)")
    ap.add_argument("--minute-s", type=float, default=1.5, help="real seconds per simulated minute")
    args = ap.parse_args()
    bench = Bench.start(args.workers)
    settings, ns, dash, url = bench.settings, bench.ns, bench.dash, bench.url
    try:
        client = httpx.Client(timeout=5)
        while len(client.get(url + "/api/status").json()["workers"]) < args.workers:
            time.sleep(0.2)
        times = []
        for _ in range(args.scrapes):
            started = time.perf_counter()
            body = client.get(url + "/metrics").text
            times.append(time.perf_counter() - started)
        rounds = [
            float(x.split()[-1]) for x in body.splitlines() if x.startswith("pyrocluster_dashboard_refresh")
        ]
        times.sort()
        print(f"/metrics with {args.workers} workers: {len(body.splitlines())} lines, {len(body)} bytes")
        median, p95 = 1000 * statistics.median(times), 1000 * times[int(0.95 * len(times))]
        worst = 1000 * times[-1]
        print(f"  scrape median {median:.1f} ms, p95 {p95:.1f} ms, max {worst:.1f} ms (goal <= 500 ms)")
        print(f"  background refresh round (all {args.workers} workers asked): {1000 * rounds[0]:.0f} ms")
        base_rss = rss_mb(dash.pid)
        print(f"dashboard RSS after start-up with {args.workers} workers: {base_rss:.1f} MB")
        samples = fast_forward(settings, ns, dash.pid, args.minutes, args.minute_s, client, url)
        if not samples:
            return
        end = time.time()
        kept = finished.find_finished(ns, now=end)
        print(
            f"after {args.minutes} simulated minutes (one 20,000-task job each, 50 failures with tracebacks):"
        )
        quarters = ", ".join(f"{s:.1f}" for s in samples[14::15])
        print(f"  dashboard RSS: {samples[-1]:.1f} MB at the end, peak {max(samples):.1f} MB")
        print(f"  RSS at the end of every simulated quarter hour: {quarters} MB")
        print(f"  finished jobs still listed: {len(kept)} (kept {finished.KEEP_FINISHED_S / 60:.0f} min)")
        print(f"  name-server records of finished jobs: {len(ns.list(prefix=finished.FINISHED_PREFIX))}")
    finally:
        bench.stop()


def fast_forward(settings: Settings, ns: Any, pid: int, minutes: int, minute_s: float, client: Any, url: str):
    """Run ``minutes`` simulated jobs; RSS of the dashboard after each."""
    daemon = SecureDaemon(settings, host="127.0.0.1", port=0)
    threading.Thread(target=daemon.requestLoop, daemon=True).start()
    samples = []
    try:
        for minute in range(minutes):
            job_id = f"hourly@bench-{minute}"
            done = {"n": 0}
            failures = [
                {"id": f"t-{minute}-{k}", "call": "task1", "worker": "bench-w00", "attempts": 1,
                 "type": "ValueError", "message": "x" * 100, "traceback": TRACEBACK}
                for k in range(50)
            ]  # fmt: skip

            def snapshot(done=done, minute=minute) -> dict[str, Any]:
                done["n"] = min(20_000, done["n"] + 2_500)
                return {"name": "hourly", "total": 20_000, "done": done["n"], "ok": done["n"] - 50,
                        "failed": 50, "skipped": 0, "retried": 3, "in_flight": 64, "rate": 333.0,
                        "eta_s": 10.0, "failures_seen": done["n"]}  # fmt: skip

            uri = str(daemon.register(JobProgress(job_id, snapshot, functools.partial(list, failures))))
            registry.register_job(ns, job_id, uri)
            time.sleep(minute_s)
            client.get(url + "/api/dashboard")
            registry.unregister_job(ns, job_id)
            daemon.unregister(uri.split(":")[1].split("@")[0])
            entry = {**snapshot(), "state": "finished", "failures_seen": 50}
            # Job ``minute`` of the hour ended (minutes - 1 - minute) simulated minutes before the hour's end.
            ended = time.time() - (minutes - 1 - minute) * 60
            finished.register_finished(ns, job_id, entry, failures, now=ended)
            samples.append(rss_mb(pid))
    finally:
        daemon.shutdown()
    return samples


if __name__ == "__main__":
    main()
