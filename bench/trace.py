"""Where one call's latency goes: a timeline of ``cluster.submit(...).result()``, hop by hop.

``python -m bench.trace [--calls N] [--pool process|thread]`` starts two workers that load
``bench/_trace_tasks.py`` (a ``trace_add`` task that stamps when it ran, and a ``run_batch``
that stamps entry and exit), wraps the coordinator's link methods the same way, sends one call
at a time and prints the median time of each hop next to a raw Pyro5 round trip. Every stamp
is ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux, shared by all processes).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

HOPS = [
    ("submit -> batch handed to the link (queue, choose a worker)", "c0", "c1"),
    ("link -> sender thread calls the proxy (thread hand-off)", "c1", "c2"),
    (
        "proxy call -> worker's run_batch entered (serialize, loopback, daemon thread, deserialize)",
        "c2",
        "w0",
    ),
    ("run_batch -> task ran in its slot (validation, slot hand-off, pipe, unpack)", "w0", "s"),
    ("task ran -> run_batch returns (pack, pipe back, outcome bookkeeping)", "s", "w1"),
    ("run_batch returns -> coordinator has the reply (serialize, loopback, deserialize)", "w1", "c3"),
    ("reply -> result() returns in the caller (settle, future, wake the caller)", "c3", "c4"),
]


def main() -> None:
    """Trace, print the hop table."""
    ap = argparse.ArgumentParser(prog="python -m bench.trace", description=__doc__)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--pool", choices=["process", "thread"], default="process")
    args = ap.parse_args()

    from bench import raw
    from pyrocluster.coordinator import links
    from pyrocluster.coordinator.cluster import Cluster

    stamps: dict[int, dict[str, float]] = {}
    link_cls: Any = links.WorkerLink
    orig_send, orig_call = link_cls.send, link_cls._call

    def send(self: Any, batch: Any) -> None:
        stamps.setdefault(id(batch.calls[0]), {})["c1"] = time.perf_counter()
        orig_send(self, batch)

    def call(self: Any, proxy: Any, batch: Any) -> Any:
        st = stamps.setdefault(id(batch.calls[0]), {})
        st["c2"] = time.perf_counter()
        reply = orig_call(self, proxy, batch)
        st["c3"] = time.perf_counter()
        if isinstance(reply, dict) and "trace" in reply:
            st["w0"], st["w1"] = reply["trace"]
        return reply

    link_cls.send, link_cls._call = send, call
    tasks_file = str(Path(__file__).with_name("_trace_tasks.py"))
    cluster = Cluster.local(workers=2, worker_args=["--pool", args.pool, "--tasks", tasks_file])
    daemon, uri, thread = raw.serve_in_thread()
    try:
        rows: list[dict[str, float]] = []
        for i in range(args.calls + 100):
            c0 = time.perf_counter()
            fut = cluster.submit("trace_add", 1, 2)
            value, ran = fut.result()
            c4 = time.perf_counter()
            st = stamps.pop(id(fut.call), None) if hasattr(fut, "call") else None
            if st is None:
                st = stamps.popitem()[1] if stamps else {}
            stamps.clear()
            st.update(c0=c0, s=ran, c4=c4)
            if i >= 100 and all(k in st for k in ("c0", "c1", "c2", "w0", "s", "w1", "c3", "c4")):
                rows.append(st)
        p = raw.proxy(uri)
        raw_us = []
        for _ in range(args.calls):
            t = time.perf_counter()
            p.add(1, 2)
            raw_us.append((time.perf_counter() - t) * 1e6)
        p._pyroRelease()
    finally:
        cluster.close()
        daemon.shutdown()
    total = statistics.median((r["c4"] - r["c0"]) * 1e6 for r in rows)
    print(f"{len(rows)} traced calls, workers --pool {args.pool}; median per hop (us):")
    acc = 0.0
    for label, a, b in HOPS:
        med = statistics.median((r[b] - r[a]) * 1e6 for r in rows)
        acc += med
        print(f"  {med:8.1f}  {label}")
    print(f"  {total:8.1f}  total (median of the whole call; the hop medians add up to {acc:.1f})")
    print(
        f"  {statistics.median(raw_us):8.1f}  raw Pyro5 proxy.add(1, 2), daemon in a thread of this process"
    )


if __name__ == "__main__":
    main()
