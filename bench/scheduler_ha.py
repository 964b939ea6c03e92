"""Scheduler figures: tick jitter and failover time, with real processes on loopback.

    python -m bench.scheduler_ha                 # both, about 3.5 minutes
    python -m bench.scheduler_ha --ticks 20 --trials 3

* **Jitter**: one scheduler, ``every: 1s``, a two-task job; how late each tick is *decided*
  (claimed in the name server and handed to its run) against its instant, over ``--ticks``
  ticks: median, p99 and max. Goal: p99 <= 100 ms.
* **Failover**: two schedulers on one file; the leader is SIGKILLed a random 1-3 s into its
  lead and the time to the standby's first fire is measured, ``--trials`` times (each trial
  starts a fresh standby next to the survivor). Goal: <= 10 s.

Both print the machine's load (1-minute load average, and the CPU that processes other than
ours used meanwhile): the figures only mean something next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import LoadMonitor
from pyrocluster.local import ManagedProcess, start_nameserver, start_worker, stop_processes

JOB = "name: tick\ntasks:\n  - {id: a, call: add, args: [40, 2]}\n  - {id: h, call: sha256, args: [x]}\n"


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _lines(cwd: Path) -> list[dict[str, Any]]:
    path = cwd / "runs" / "s" / "ticks.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"error: {what}: not within {timeout_s:g} s")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _scheduler(ns: str, cwd: Path, name: str) -> ManagedProcess:
    proc = ManagedProcess(["scheduler", str(cwd / "schedules.yaml"), "--ns", ns, "--name", name])
    proc.wait_ready()
    return proc


def jitter(ns: str, cwd: Path, ticks: int) -> dict[str, float]:
    """Lateness (ms) of ``ticks`` consecutive fired ticks of one scheduler on ``every: 1s``."""
    proc = _scheduler(ns, cwd, "jitter")
    try:
        fired = _wait(
            lambda: (f := [x for x in _lines(cwd) if x["decision"] == "fired"]) and len(f) >= ticks + 1 and f,
            ticks * 1.5 + 30,
            f"{ticks} ticks",
        )
    finally:
        stop_processes([proc])
    late_ms = [(_seconds(x["decided_at"]) - _seconds(x["tick"])) * 1000 for x in fired[1 : ticks + 1]]
    return {
        "ticks": len(late_ms),
        "median_ms": statistics.median(late_ms),
        "p99_ms": _percentile(late_ms, 0.99),
        "max_ms": max(late_ms),
    }


def failover(ns: str, cwd: Path, trials: int) -> dict[str, Any]:
    """Seconds from SIGKILL of the leader to the standby's first fire, ``trials`` times."""
    leader = _scheduler(ns, cwd, "s0")
    _wait(lambda: any(x["scheduler"] == "s0" for x in _lines(cwd)), 15, "the first leader fires")
    times: list[float] = []
    procs = [leader]
    try:
        for trial in range(1, trials + 1):
            standby = _scheduler(ns, cwd, f"s{trial}")
            procs.append(standby)
            time.sleep(random.uniform(1, 3))  # a random moment of the leader's schedule
            leader.proc.send_signal(signal.SIGKILL)
            leader.proc.wait()
            killed = time.time()
            first = _wait(
                lambda name=f"s{trial}": [
                    x for x in _lines(cwd) if x["scheduler"] == name and x["decision"] == "fired"
                ],
                30,
                f"trial {trial}: the standby fires",
            )[0]
            times.append(_seconds(first["decided_at"]) - killed)
            leader = standby
    finally:
        stop_processes(procs)
    lines = _lines(cwd)
    fired_twice = [t for t in {x["tick"] for x in lines} if sum(x["tick"] == t for x in lines) > 1]
    return {
        "trials": len(times),
        "median_s": statistics.median(times),
        "max_s": max(times),
        "min_s": min(times),
        "each_s": [round(t, 2) for t in times],
        "ticks_recorded_twice": len(fired_twice),
    }


def main(argv: list[str] | None = None) -> int:
    """Run both measurements and print them with the machine's load."""
    ap = argparse.ArgumentParser(prog="python -m bench.scheduler_ha", description=__doc__)
    ap.add_argument("--ticks", type=int, default=100, help="ticks for the jitter figure (every: 1s)")
    ap.add_argument("--trials", type=int, default=10, help="failover trials")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as one JSON object")
    args = ap.parse_args(argv)
    monitor = LoadMonitor()
    mark = monitor.mark()
    figures: dict[str, Any] = {"loadavg_1m_before": round(os.getloadavg()[0], 2)}
    ns_proc, ns = start_nameserver()
    worker = start_worker(ns, ["--services", "compute", "--concurrency", "2"])
    try:
        for what, run in (("jitter", lambda d: jitter(ns, d, args.ticks)), ("failover", None)):
            with tempfile.TemporaryDirectory(prefix=f"bench-sched-{what}-") as tmp:
                cwd = Path(tmp)
                (cwd / "job.yaml").write_text(JOB)
                (cwd / "schedules.yaml").write_text(
                    f"schedules:\n  - name: s\n    job: job.yaml\n    every: 1s\n    misfire: once\n"
                    f"    overlap: allow\n    output: {cwd}/runs/{{name}}/{{fire}}.results.jsonl\n"
                )
                os.chdir(cwd)
                figures[what] = run(cwd) if run else failover(ns, cwd, args.trials)
                os.chdir("/")
                print(what, json.dumps(figures[what]), flush=True)
    finally:
        stop_processes([worker, ns_proc])
    figures["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    foreign, ours = monitor.since(mark)
    monitor.stop()
    figures["foreign_cpu_share"] = round(foreign, 2)
    figures["our_cpu_share"] = round(ours, 2)
    figures["cpus"] = os.cpu_count()
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
