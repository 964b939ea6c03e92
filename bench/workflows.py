"""Workflows: what dependencies cost, through ``submit_job`` (results file written) on the default cluster.

* A chain of N dependent tiny tasks (each ``add`` takes the one before's result) against N
  independent ones: tasks per second, and the overhead per edge in milliseconds (a chain runs
  one call at a time, so an edge costs a full round trip to a worker).
* A fan-out/fan-in: one task returns a list of M numbers, ``map: {$result: ...}`` adds 1 to
  each, one task receives all M results; against a flat M-item ``map``. Goal >= 0.8x.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Context, round_robin
from bench.report import BASE, INFO, PYRO

NAME = "Workflows"
CHAIN, FAN = "Workflow chain", "Workflow fan-out/in"


def chain_job(n: int) -> str:
    """``t0 = add(0, 1)``, then ``t_i = add(t_{i-1}, 1)``."""
    lines = ["name: bench-chain", "tasks:", "  - {id: t0, call: add, args: [0, 1]}"]
    lines += [f"  - {{id: t{i}, call: add, args: [{{$result: t{i - 1}}}, 1]}}" for i in range(1, n)]
    return "\n".join(lines) + "\n"


def flat_job(n: int) -> str:
    """``n`` independent ``add(i, 1)`` calls."""
    return "name: bench-flat\ntasks:\n  - {id: t, call: add, kwargs: {b: 1}, map: [" + ", ".join(
        str(i) for i in range(n)
    ) + "]}\n"  # fmt: skip


def fan_job(n: int) -> str:
    """A source of ``n`` numbers, ``add(x, 1)`` over it, one fan-in receiving every result."""
    return (
        "name: bench-fan\ntasks:\n"
        f"  - {{id: src, call: echo, args: [[{', '.join(str(i) for i in range(n))}]]}}\n"
        "  - {id: inc, call: add, map: {$result: src}, kwargs: {b: 1}}\n"
        "  - {id: all, call: echo, args: [{$result: inc}]}\n"
    )


def run(ctx: Context) -> None:
    """Measure the chain and the fan-out/fan-in and add their rows and targets."""
    from pyrocluster.config import Settings
    from pyrocluster.jobs.submit import SubmitOptions, submit_job

    cluster = ctx.default_cluster()
    settings = Settings.from_sources(ns=cluster.address)
    tmp = Path(tempfile.mkdtemp(prefix="bench-flow-"))
    chain_n, fan_n = ctx.sizes.flow_chain, ctx.sizes.flow_fan
    jobs = {
        "chain": (chain_job(chain_n), chain_n),
        "independent": (flat_job(chain_n), chain_n),
        "fan": (fan_job(fan_n), fan_n + 2),
        "flat": (flat_job(fan_n), fan_n),
    }
    for name, (text, _) in jobs.items():
        (tmp / f"{name}.yaml").write_text(text)

    def rate(name: str) -> Callable[[], float]:
        def once() -> float:
            out = tmp / f"{name}.jsonl"
            opts = SubmitOptions(job_file=str(tmp / f"{name}.yaml"), out=str(out), wait_s=10.0)
            start = time.perf_counter()
            summary = submit_job(settings, opts, threading.Event())
            wall = time.perf_counter() - start
            expected = jobs[name][1]
            if summary.ok != expected:
                raise AssertionError(f"{name}: {summary.ok} ok of {expected}")
            out.unlink()
            return expected / wall

        return once

    ctx.log(f"{NAME}: chain of {chain_n}, fan-out/fan-in of {fan_n}, {ctx.sizes.reps} reps (+1 warm-up)")
    s = round_robin({name: rate(name) for name in jobs}, ctx.sizes.reps, log=ctx.log)
    shutil.rmtree(tmp, ignore_errors=True)

    rep = ctx.report
    u = "tasks/s"
    chain = rep.add(CHAIN, f"chain of {chain_n} dependent add calls (submit_job)", PYRO, u, s["chain"])
    indep = rep.add(CHAIN, f"{chain_n} independent add calls (submit_job)", BASE, u, s["independent"])
    edge_ms = [1000 * (1 / c - 1 / i) for c, i in zip(s["chain"], s["independent"], strict=True)]
    rep.add(CHAIN, "  overhead per edge (chain time - independent time) / task", INFO, "ms", edge_ms)
    fan = rep.add(FAN, f"fan-out/fan-in over {fan_n} items (+2 tasks)", PYRO, u, s["fan"], short="fan")
    flat = rep.add(FAN, f"flat {fan_n}-item map", BASE, u, s["flat"])
    rep.target(
        f"Workflows fan-out/fan-in of {fan_n} vs a flat {fan_n}-item map",
        "throughput ratio >= 0.8",
        ">=",
        0.8,
        rep.ratio(fan, flat),
        detail=f"{rep.compare(fan, flat)}; chain vs independent {rep.compare(chain, indep)}",
    )
