"""W1 latency: one ``cluster.submit("add", 1, 2).result()`` at a time, in microseconds per call.

Baseline: one raw Pyro5 ``proxy.add(1, 2)`` at a time (daemon in a thread of this process, the
target's baseline, and in a process of its own). A third row is the floor of the path: the raw
daemon in a process whose ``add`` runs in a child process over a pipe (``bench.raw --hop``), the
least a call pays while the worker's daemon stands between the coordinator and the slot process.
Two more rows give the calling thread's CPU per call (``time.thread_time``) of the lone calls and
of the raw calls to the daemon in its own process: a lone call's reply is awaited awake
(``coordinator/wire/replyspin.py``), which costs CPU the wall time does not show.
"""

from __future__ import annotations

import time
from typing import Any

from bench import raw
from bench.common import Context, round_robin
from bench.report import BASE, INFO, PYRO

NAME = "W1 latency"


def run(ctx: Context) -> None:
    """Measure W1 latency and add its rows and target."""
    calls = ctx.sizes.latency_calls
    cluster = ctx.default_cluster()
    p_thread = raw.proxy(ctx.raw_thread())
    p_proc = raw.proxy(ctx.raw_process())
    p_hop = raw.proxy(ctx.raw_process(hop=True))

    cpu: dict[str, list[float]] = {"submit": [], "raw-proc": []}

    def pyro() -> float:
        submit = cluster.submit
        start, start_cpu = time.perf_counter(), time.thread_time()
        for _ in range(calls):
            if submit("add", 1, 2).result() != 3:
                raise AssertionError("cluster.submit: wrong result")
        cpu["submit"].append((time.thread_time() - start_cpu) / calls * 1e6)
        return (time.perf_counter() - start) / calls * 1e6

    def sequential(p: Any, cpu_of: str | None = None) -> float:
        add = p.add
        start, start_cpu = time.perf_counter(), time.thread_time()
        for _ in range(calls):
            add(1, 2)
        if cpu_of is not None:
            cpu[cpu_of].append((time.thread_time() - start_cpu) / calls * 1e6)
        return (time.perf_counter() - start) / calls * 1e6

    ctx.log(f"{NAME}: {calls} sequential calls, {ctx.sizes.reps} reps")
    s = round_robin(
        {
            "submit": pyro,
            "raw-thread": lambda: sequential(p_thread),
            "raw-proc": lambda: sequential(p_proc, "raw-proc"),
            "raw-hop": lambda: sequential(p_hop),
        },
        ctx.sizes.reps,
        log=ctx.log,
    )
    p_thread._pyroRelease()
    p_proc._pyroRelease()
    p_hop._pyroRelease()
    rep = ctx.report
    u = "us/call"
    pr = rep.add(NAME, 'cluster.submit("add", 1, 2).result(), one at a time', PYRO, u, s["submit"])
    base = rep.add(NAME, "raw Pyro5 proxy.add(1, 2), daemon in a thread", BASE, u, s["raw-thread"])
    other = rep.add(NAME, "raw Pyro5 proxy.add(1, 2), daemon in another process", BASE, u, s["raw-proc"])
    hop = rep.add(
        NAME, "raw Pyro5 proxy.add(1, 2), daemon in another process, add in its child over a pipe", BASE, u,
        s["raw-hop"],
    )  # fmt: skip
    reps = ctx.sizes.reps  # the samples after the warm-up's
    rep.add(NAME, "  the calling thread's CPU a call, cluster.submit", INFO, u, cpu["submit"][-reps:])
    rep.add(
        NAME,
        "  the calling thread's CPU a call, raw Pyro5 (daemon in a process)",
        INFO,
        u,
        cpu["raw-proc"][-reps:],
    )
    rep.target(
        "W1 latency vs a raw sequential Pyro5 call (daemon in its own process)",
        "time ratio <= 1.5",
        "<=",
        1.5,
        rep.ratio(pr, other),
        detail=f"best-of-n {rep.best_ratio(pr, other) or 0:.2f}x; vs the daemon in a thread "
        f"{rep.compare(pr, base)}; vs the daemon with a pipe hop to a child (the path's floor) "
        f"{rep.compare(pr, hop)}",
    )
