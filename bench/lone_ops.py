"""How much Python a lone call runs in the coordinator: opcodes and Python function calls of
``cluster.submit("add", 1, 2).result()`` in the calling thread, counted with ``sys.settrace``.

``python -m bench.lone_ops [--calls N] [--top K] [--after-w1]`` starts two local workers (the
direct path on), counts N calls and prints the counts per call, and with ``--top`` the
functions that run the most opcodes. Unlike CPU time, the counts do not move with the machine's
load, so two versions of the code can be compared on a busy machine (C code, system calls and
the other threads are not counted: ``bench.trace`` and ``bench.lone_cpu`` give the times).
``--after-w1`` counts again after three ``map``s and three in-process job submits of 20,000
``add`` (the bench's W1 work), to see whether that work leaves a lone call more to do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any


class Counter:
    """A ``sys.settrace`` tracer that counts opcodes and calls, per function when asked."""

    def __init__(self) -> None:
        self.opcodes = 0
        self.calls = 0
        self.per: dict[tuple[str, str], int] = {}

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call":
            self.calls += 1
            frame.f_trace_opcodes = True
        elif event == "opcode":
            self.opcodes += 1
            code = frame.f_code
            key = (code.co_filename.rsplit("/", 1)[-1], code.co_name)
            self.per[key] = self.per.get(key, 0) + 1
        return self


def count(cluster: Any, calls: int) -> Counter:
    """Count ``calls`` lone calls (after 100 uncounted)."""
    for _ in range(100):
        cluster.submit("add", 1, 2).result()
    counter = Counter()
    sys.settrace(counter)
    try:
        for _ in range(calls):
            cluster.submit("add", 1, 2).result()
    finally:
        sys.settrace(None)
    return counter


def w1_work(cluster: Any) -> None:
    """Three maps and three in-process job submits of 20,000 ``add``, as the bench's W1 runs."""
    from bench.w1_tiny import write_job
    from pyrocluster.config import Settings
    from pyrocluster.jobs.submit import SubmitOptions, submit_job

    n = 20_000
    items = [(i, i) for i in range(n)]
    for _ in range(3):
        list(cluster.starmap("add", items))
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "w1.yaml"
        write_job(job, n)
        settings = Settings.from_sources(ns=cluster.address)
        for i in range(3):
            opts = SubmitOptions(job_file=str(job), out=str(Path(tmp) / f"out-{i}.jsonl"), wait_s=10.0)
            submit_job(settings, opts, threading.Event())


def main() -> None:
    """Count and print."""
    ap = argparse.ArgumentParser(prog="python -m bench.lone_ops", description=__doc__)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--top", type=int, default=0)
    ap.add_argument("--after-w1", action="store_true")
    args = ap.parse_args()

    from pyrocluster.coordinator.cluster import Cluster

    cluster = Cluster.local(workers=2)
    try:
        rounds = [("fresh", None), ("after W1's work", w1_work)] if args.after_w1 else [("", None)]
        for label, before in rounds:
            if before is not None:
                before(cluster)
            c = count(cluster, args.calls)
            n = args.calls
            head = f"{label}: " if label else ""
            print(f"{head}{c.opcodes / n:.0f} opcodes, {c.calls / n:.1f} Python calls per lone call")
            for (where, name), ops in sorted(c.per.items(), key=lambda kv: -kv[1])[: args.top]:
                print(f"  {ops / n:7.1f}  {where}:{name}")
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
