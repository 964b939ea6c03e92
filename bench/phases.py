"""Where ``submit`` spends its wall time, phase by phase (W1's job file, in process).

``python -m bench.phases [--items N] [--reps R]`` wraps the steps ``submit_job`` takes (load
and validate the job file, wait for workers, check task names, connect a Cluster, open the
results file, run, announce, compact and close) and prints the median seconds of each, then the
coordinator's CPU per call (``time.thread_time``, so the figure holds on a loaded machine better
than wall time does): the main thread making and submitting the calls, the recorder writing the
outcomes, the wire thread (replies, settling, the next batches), and the whole process.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

STEPS = [
    "load_job",
    "wait_for_workers",
    "check_task_names",
    "Cluster",
    "JobRunner.open",
    "Announcement.__enter__",
    "JobRunner.run",
    "Announcement.__exit__",
    "JobRunner.close",
    "Cluster.close",
]


def main() -> None:
    """Time each phase of ``submit_job``."""
    ap = argparse.ArgumentParser(prog="python -m bench.phases", description=__doc__)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    from bench.w1_tiny import write_job
    from pyrocluster.config import Settings
    from pyrocluster.coordinator.cluster import Cluster
    from pyrocluster.jobs import runner as runner_mod
    from pyrocluster.jobs import submit as submit_mod
    from pyrocluster.local import LocalCluster

    times: dict[str, list[float]] = defaultdict(list)
    """Wall seconds of each call of a phase."""
    run_cpu: dict[str, list[float]] = defaultdict(list)
    """Thread CPU seconds of each call of a thread's function, in the current run."""
    cpu: dict[str, list[float]] = defaultdict(list)
    """Thread CPU seconds per run."""

    def timed(
        name: str,
        fn: Callable[..., Any],
        into: dict[str, list[float]] = times,
        clock: Callable[[], float] = time.perf_counter,
    ) -> Callable[..., Any]:
        def wrapper(*a: Any, **k: Any) -> Any:
            start = clock()
            try:
                return fn(*a, **k)
            finally:
                into[name].append(clock() - start)

        return wrapper

    def thread_cpu(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        return timed(name, fn, run_cpu, time.thread_time)

    from pyrocluster.coordinator.wire import Wire

    making = "main thread, making and submitting calls"
    runner_mod.JobRunner._run_tasks = thread_cpu(making, runner_mod.JobRunner._run_tasks)  # type: ignore[method-assign]
    runner_mod.JobRunner._recorder = thread_cpu("recorder thread", runner_mod.JobRunner._recorder)  # type: ignore[method-assign]
    Wire._loop = thread_cpu("wire thread", Wire._loop)  # type: ignore[method-assign]
    for name in ("load_job", "wait_for_workers", "check_task_names"):
        setattr(submit_mod, name, timed(name, getattr(submit_mod, name)))
    submit_mod.Cluster = timed("Cluster", Cluster)  # type: ignore[assignment,misc]
    Cluster.close = timed("Cluster.close", Cluster.close)  # type: ignore[method-assign]
    for meth in ("open", "run", "close"):
        setattr(runner_mod.JobRunner, meth, timed(f"JobRunner.{meth}", getattr(runner_mod.JobRunner, meth)))
    ann = submit_mod.Announcement
    ann.__enter__ = timed("Announcement.__enter__", ann.__enter__)  # type: ignore[method-assign]
    ann.__exit__ = timed("Announcement.__exit__", ann.__exit__)  # type: ignore[method-assign]

    tmp = Path(tempfile.mkdtemp(prefix="bench-phases-"))
    job = tmp / "job.yaml"
    write_job(job, args.items)
    total: list[float] = []
    with LocalCluster(2) as local:
        settings = Settings.from_sources(ns=local.address)
        for rep in range(args.reps + 1):
            out = tmp / f"out-{rep}.jsonl"
            run_cpu.clear()
            start, start_cpu = time.perf_counter(), time.process_time()
            summary = submit_mod.submit_job(
                settings, submit_mod.SubmitOptions(job_file=str(job), out=str(out)), threading.Event()
            )
            wall = time.perf_counter() - start
            run_cpu["the whole coordinator process"].append(time.process_time() - start_cpu)
            if summary.ok != args.items:
                raise SystemExit(f"only {summary.ok} ok")
            if rep == 0:
                times.clear()  # warm-up
                continue
            total.append(wall)
            for name, spent in run_cpu.items():
                cpu[name].append(sum(spent))
    shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median(total)
    print(f"submit_job of {args.items} add calls: median {med:.3f} s = {args.items / med:,.0f} tasks/s")
    for name in STEPS:
        if times.get(name):
            t = statistics.median(times[name])
            print(f"  {t:7.3f} s  {t / med:5.1%}  {name}")
    print("coordinator CPU per call (medians):")
    for name, spent_s in cpu.items():
        print(f"  {statistics.median(spent_s) / args.items * 1e6:5.2f} us  {name}")


if __name__ == "__main__":
    main()
