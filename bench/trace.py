"""Where one call's latency goes: a timeline of ``cluster.submit(...).result()``, hop by hop.

``python -m bench.trace [--calls N] [--pool process|thread]`` starts two workers that load
``bench/_trace_tasks.py`` (a ``trace_add`` task that stamps when it and its batch ran, and a
``run_batch`` that stamps its steps), wraps the coordinator's steps the same way, sends one call
at a time and prints the median of each hop next to a raw Pyro5 round trip (daemon in another
process), and the CPU each process spent per call. Every stamp is ``time.perf_counter()``
(CLOCK_MONOTONIC on Linux, shared by all processes). On a loaded machine the medians follow the
load; the CPU per call follows the code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HOPS = [
    ("submit -> batch handed to the link (encode, choose a worker, book it)", "c0", "c1"),
    ("link -> request written by the caller (encode the request, queue, send)", "c1", "c2"),
    ("written -> worker's run_batch entered (loopback, daemon thread wakes, decode)", "c2", "w0"),
    ("run_batch -> slots reached (validate, admission)", "w0", "p0"),
    ("slots -> batch started in the slot process (pipe, wake, unpack)", "p0", "b0"),
    ("batch started -> task ran", "b0", "s"),
    ("task ran -> worker woken by the slot's reply (log outcome, pipe, wake)", "s", "x1"),
    ("worker woken -> slots done (read the log, release the slot)", "x1", "p1"),
    ("slots done -> run_batch returns (counters, load)", "p1", "w1"),
    ("run_batch returns -> reply read by the caller (encode, loopback, wake)", "w1", "c3"),
    ("reply read -> result() returns (decode, apply, settle the future)", "c3", "c4"),
]
DIRECT_HOPS = [
    ("submit -> batch handed to the link (encode, choose a worker, book it)", "c0", "c1"),
    ("link -> request written by the caller (pick the slot's channel, encode, send)", "c1", "c2"),
    (
        "written -> call started in the slot process (loopback, the slot wakes, decode, check, claim)",
        "c2",
        "b0",
    ),
    ("call started -> task ran", "b0", "s"),
    ("task ran -> reply read by the caller (log the outcome, Pyro5 encode, loopback, wake)", "s", "c3"),
    ("reply read -> result() returns (decode, apply, settle the future)", "c3", "c4"),
]
"""The hops of a lone call sent straight to a slot process (``coordinator/direct.py``)."""
PROCESS_ONLY = {"p0", "b0", "x1", "p1"}


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """A process and everything it started (Linux)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        kids = []
    return [pid] + [d for k in kids for d in descendants(k)]


def role_of(pid: int) -> str:
    """What a process of the local cluster is, from its command line."""
    with open(f"/proc/{pid}/cmdline") as f:
        cmd = f.read().replace("\0", " ")
    return "worker" if " worker " in cmd else "slot process" if "forkserver" in cmd else cmd[:40]


def main() -> None:
    """Trace, print the hop table and the CPU per call."""
    ap = argparse.ArgumentParser(prog="python -m bench.trace", description=__doc__)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--pool", choices=["process", "thread"], default="process")
    ap.add_argument("--no-direct", action="store_true", help="every call through the worker (run_batch)")
    args = ap.parse_args()

    from bench import raw
    from pyrocluster.coordinator import channel, links, wire
    from pyrocluster.coordinator.cluster import Cluster

    now: dict[str, float] = {}
    link_cls: Any = links.WorkerLink
    wire_cls: Any = wire.Wire
    channel_cls: Any = channel.Channel
    orig_send, orig_push, orig_result = link_cls.send, wire_cls.push, channel_cls.result_of

    def send(self: Any, batch: Any) -> None:
        now["c1"] = time.perf_counter()
        orig_send(self, batch)

    def push(self: Any, ch: Any, call_no: int, *more: Any) -> None:
        orig_push(self, ch, call_no, *more)
        now["c2"] = time.perf_counter()

    def result_of(self: Any, msg: Any) -> Any:
        now["c3"] = time.perf_counter()
        reply = orig_result(self, msg)
        if isinstance(reply, dict) and "trace" in reply:
            now.update(reply.pop("trace"))
        return reply

    link_cls.send, wire_cls.push, channel_cls.result_of = send, push, result_of
    tasks_file = str(Path(__file__).with_name("_trace_tasks.py"))
    cluster = Cluster.local(
        workers=1, worker_args=["--pool", args.pool, "--tasks", tasks_file], direct=not args.no_direct
    )
    me = os.getpid()
    procs = [p for p in descendants(me) if p != me]
    roles = {p: role_of(p) for p in procs}
    rows: list[dict[str, float]] = []
    try:
        for _ in range(100):
            cluster.submit("trace_add", 1, 2).result()
        before = {p: cpu_s(p) for p in procs}
        ours = time.process_time()
        for _ in range(args.calls):
            now.clear()
            c0 = time.perf_counter()
            _, ran, started = cluster.submit("trace_add", 1, 2).result()
            now.update(c0=c0, c4=time.perf_counter(), s=ran, b0=started)
            rows.append(dict(now))
        ours = time.process_time() - ours
        spent = {p: cpu_s(p) - before[p] for p in procs}
    finally:
        cluster.close()
    raw_proc = subprocess.Popen(
        [sys.executable, "-m", "bench.raw"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert raw_proc.stdout is not None
        p = raw.proxy(raw_proc.stdout.readline().strip())
        raw_us = []
        raw_daemon = cpu_s(raw_proc.pid)
        raw_cpu = time.process_time()
        for _ in range(args.calls):
            t = time.perf_counter()
            p.add(1, 2)
            raw_us.append((time.perf_counter() - t) * 1e6)
        raw_cpu = time.process_time() - raw_cpu
        raw_daemon = cpu_s(raw_proc.pid) - raw_daemon
        p._pyroRelease()
    finally:
        assert raw_proc.stdin is not None
        raw_proc.stdin.close()
        raw_proc.wait()
    direct = sum("w0" not in r for r in rows)
    hops = DIRECT_HOPS if direct > len(rows) // 2 else HOPS
    other = len(rows)
    rows = [r for r in rows if ("w0" not in r) == (hops is DIRECT_HOPS)]
    other -= len(rows)
    path = "straight to the slot process" if hops is DIRECT_HOPS else "through the worker's run_batch"
    print(f"{len(rows)} traced calls {path} ({other} by the other path left out), one worker")
    print(f"--pool {args.pool}; median per hop (us):")
    total = statistics.median((r["c4"] - r["c0"]) * 1e6 for r in rows)
    acc = 0.0
    for label, a, b in hops:
        got = [(r[b] - r[a]) * 1e6 for r in rows if a in r and b in r]
        if not got:
            continue
        med = statistics.median(got)
        acc += med
        print(f"  {med:8.1f}  {label}")
    print(f"  {total:8.1f}  total (median of the whole call; the hop medians add up to {acc:.1f})")
    print(f"  {statistics.median(raw_us):8.1f}  raw Pyro5 proxy.add(1, 2), daemon in another process")
    n = args.calls
    print("CPU per call (us):")
    print(f"  {ours / n * 1e6:8.1f}  coordinator (this process; raw Pyro5 client: {raw_cpu / n * 1e6:.1f})")
    for pid in procs:
        if spent[pid] / n * 1e6 >= 1:
            print(f"  {spent[pid] / n * 1e6:8.1f}  {roles[pid]} (pid {pid})")
    print(f"  {raw_daemon / n * 1e6:8.1f}  raw Pyro5 daemon process")


if __name__ == "__main__":
    main()
