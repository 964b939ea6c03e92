"""The floor under a job's coordinator: its per-call work as straight Python in one thread.

``python -m bench.job_floor [--items N] [--reps R]`` times, for W1's job (N ``add(i, i)``), the
work any coordinator of a job file must do per call, written as plainly as Python allows, in one
thread, with no lock, no hand-off and no failure handling: decode the item lines, make a call
object per item and encode its arguments on their own (one call, one blast radius), build each
batch's request, decode each reply's outcomes (each value on its own), build each result's record
and its JSON line, write and fsync the file. The workers' part (encoding the replies) is made
before the clock starts. Then, in the same process, ``submit_job`` of the same job on
``LocalCluster(2)``, with the coordinator's CPU a call (``time.process_time``): the difference
is what the coordinator's machinery costs (threads and their hand-offs, the dispatcher's policy
and bookkeeping, failover, retries, priorities, status, the job's announcement, a new
coordinator per job).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import orjson

BATCH = 2048
"""Calls a batch (the dispatcher's largest)."""


class FloorCall:
    """The least a call must carry: its identity, arguments, payload and outcome."""

    __slots__ = ("id", "args", "kwargs", "payload", "value", "worker", "attempts", "elapsed_ms")

    def __init__(self, call_id: str, args: Any) -> None:
        self.id = call_id
        self.args = args
        self.kwargs: dict[str, Any] = {}
        self.payload = b""
        self.value: Any = None
        self.worker = ""
        self.attempts = 0
        self.elapsed_ms = 0.0


def worker_replies(n: int) -> list[bytes]:
    """What the workers answer, a reply a batch: an outcome a call, its value encoded alone."""
    pack = msgpack.Packer(use_bin_type=True).pack
    return [
        msgpack.packb({"outcomes": [[0, pack(2 * i), 0.004] for i in range(k, min(n, k + BATCH))]})
        for k in range(0, n, BATCH)
    ]


def floor_job(lines: list[str], replies: list[bytes], path: Path) -> dict[str, float]:
    """One job's coordinator work, step by step; seconds a step."""
    marks = [("start", time.perf_counter())]
    items = list(map(orjson.loads, lines))
    marks.append(("decode the item lines", time.perf_counter()))
    calls = [FloorCall(f"add#{i}", args) for i, args in enumerate(items)]
    pack = msgpack.Packer(use_bin_type=True).pack
    for call in calls:
        call.payload = pack([call.args, call.kwargs])
    marks.append(("make the calls, encode each", time.perf_counter()))
    requests = []
    for k in range(0, len(calls), BATCH):
        chunk = calls[k : k + BATCH]
        rows = [[c.id, "add", c.payload, 60.0, 0] for c in chunk]
        requests.append(msgpack.packb({"from": "floor", "calls": rows, "keep": [c.id for c in chunk]}))
    marks.append(("build and encode the requests", time.perf_counter()))
    for k, reply in zip(range(0, len(calls), BATCH), replies, strict=True):
        outcomes = msgpack.unpackb(reply)["outcomes"]
        for call, (_, raw, ms) in zip(calls[k : k + BATCH], outcomes, strict=True):
            call.value = msgpack.unpackb(raw)
            call.worker, call.attempts, call.elapsed_ms = "w1", 1, ms
    marks.append(("decode the replies, each value alone", time.perf_counter()))
    data = bytearray()
    for call, args in zip(calls, items, strict=True):
        record = {
            "id": call.id, "kind": "compute", "call": "add", "args": args, "kwargs": call.kwargs,
            "status": "ok", "result": call.value, "worker": call.worker, "attempts": call.attempts,
            "elapsed_ms": call.elapsed_ms,
        }  # fmt: skip
        data += orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    marks.append(("build the records and their lines", time.perf_counter()))
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    marks.append(("write and fsync the file", time.perf_counter()))
    return {name: end - start for (_, start), (name, end) in zip(marks, marks[1:], strict=False)}


def main() -> None:
    """Print the floor, step by step, and ``submit_job``'s coordinator CPU beside it."""
    ap = argparse.ArgumentParser(prog="python -m bench.job_floor", description=__doc__)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()

    from bench.w1_tiny import write_job
    from pyrocluster.config import Settings
    from pyrocluster.gc_thresholds import fewer_collections
    from pyrocluster.jobs.submit import SubmitOptions, submit_job
    from pyrocluster.local import LocalCluster

    n = args.items
    tmp = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    lines = [f"[{i}, {i}]" for i in range(n)]
    replies = worker_replies(n)
    with fewer_collections():  # as a job's coordinator runs (gc_thresholds.py)
        floor = [floor_job(lines, replies, tmp / f"floor-{r}.jsonl") for r in range(args.reps + 1)][1:]
    job = tmp / "job.yaml"
    write_job(job, n)
    walls: list[float] = []
    cpus: list[float] = []
    with LocalCluster(2) as local:
        settings = Settings.from_sources(ns=local.address)
        for rep in range(args.reps + 1):
            out = tmp / f"job-{rep}.jsonl"
            start, start_cpu = time.perf_counter(), time.process_time()
            summary = submit_job(settings, SubmitOptions(job_file=str(job), out=str(out)), threading.Event())
            if summary.ok != n:
                raise SystemExit(f"submit_job: only {summary.ok} of {n} ok")
            if rep:  # the first is the warm-up
                walls.append(time.perf_counter() - start)
                cpus.append(time.process_time() - start_cpu)
    shutil.rmtree(tmp, ignore_errors=True)

    def us(seconds: float) -> str:
        return f"{seconds / n * 1e6:5.2f} us a call"

    total = statistics.median(sum(steps.values()) for steps in floor)
    print(f"the floor of a job of {n} add calls, one thread (medians of {args.reps}):")
    for name in floor[0]:
        spent = statistics.median(steps[name] for steps in floor)
        print(f"  {spent * 1e3:7.2f} ms  {us(spent)}  {name}")
    print(f"  {total * 1e3:7.2f} ms  {us(total)}  in all")
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    rate = f"{n / wall:,.0f} tasks/s"
    print(f"submit_job of the same job on LocalCluster(2): {wall * 1e3:.1f} ms wall ({rate})")
    print(f"  {cpu * 1e3:7.2f} ms  {us(cpu)}  the coordinator's CPU ({cpu / total:.2f}x the floor)")


if __name__ == "__main__":
    main()
