"""What asking resources costs: W1 map with an explicit ``cpu: 1`` ask against no ask.

``Cluster.starmap("add")`` over ``--items`` items on two default local workers (process slots),
the variants alternating (``bench.common.round_robin``) so drift hits all alike; tasks/s,
medians of ``--reps``. An explicit ``cpu: 1`` is the default, so it travels as no ask (the
five-element call); ``licence: 1`` (the workers have ``licence=1000000``) shows what an ask that
travels with each call (a sixth element, read once per batch at the worker) costs. Goal for
``cpu: 1``: >= 0.95x.

Placement (pure, no cluster): the coordinator's cost of choosing a worker for a batch among
``--workers`` records (1,000) whose registrations carry three resource kinds (cpu, memory,
licence), with and without an ask, and of building the candidate list (the ``offers`` check of
every record, done once per requirement and worker change).

``python -m bench.resources [--items 20000] [--reps 5] [--workers 1000]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from bench.common import round_robin
from pyrocluster import Cluster
from pyrocluster.coordinator.balancer import choose
from pyrocluster.coordinator.book import WorkerRecord
from pyrocluster.coordinator.calls import asked
from pyrocluster.nameserver.registry import WorkerEntry
from pyrocluster.resources import frozen


def placement(workers: int) -> None:
    """Print microseconds per choice and per candidate-list build, with and without an ask."""
    records = []
    for i in range(workers):
        uris = {"compute": f"PYRO:w{i}.compute@127.0.0.1:1", "control": f"PYRO:w{i}.control@127.0.0.1:1"}
        totals = {"cpu": 8.0, "memory": float(2**35), "licence": float(i % 3)}
        entry = WorkerEntry(
            f"w{i}", uris, {"compute": 8, "control": 8}, frozenset(), frozenset({"t"}), resources=totals
        )
        rec = WorkerRecord(entry, max_batch=2048)
        rec.observe_load({"slots": 8, "running": i % 8, "queued": 0, "used": {"cpu": i % 8, "licence": 0}})
        records.append(rec)
    for label, ask in (
        ("no ask", None),
        ("cpu 2, memory 4GiB, licence 1", {"cpu": 2, "memory": 2.0**32, "licence": 1}),
    ):
        req = ("compute", frozenset(), "t", 0, frozen(ask))
        wanted = asked(req)
        start = time.perf_counter()
        for _ in range(20):
            cands = [r for r in records if r.offers(req)]
        build_us = (time.perf_counter() - start) / 20 * 1e6
        start = time.perf_counter()
        for turn in range(200):
            choose(cands, "compute", 0.0, turn, wanted)
        choose_us = (time.perf_counter() - start) / 200 * 1e6
        print(
            f"placement, {label}: {len(cands)} candidates; choose {choose_us:,.0f} us a batch, "
            f"candidate list {build_us:,.0f} us"
        )


def main() -> None:
    """Run both variants and print tasks/s and the ratio, with the load average."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1000)
    args = parser.parse_args()
    placement(args.workers)
    items = [(i, i) for i in range(args.items)]
    expected = [2 * i for i in range(args.items)]
    load_before = os.getloadavg()[0]
    with Cluster.local(workers=2, worker_args=["--resources", "licence=1000000"]) as cluster:
        asked = cluster.options(resources={"cpu": 1})
        licensed = cluster.options(resources={"licence": 1})

        def rate(view: object) -> float:
            start = time.perf_counter()
            results = list(view.starmap("add", items))  # type: ignore[attr-defined]
            wall = time.perf_counter() - start
            if results != expected:
                raise AssertionError("wrong results")
            return args.items / wall

        samples = round_robin(
            {
                "no ask": lambda: rate(cluster),
                "cpu: 1": lambda: rate(asked),
                "licence: 1": lambda: rate(licensed),
            },
            args.reps,
            log=print,
        )
    medians = {name: statistics.median(values) for name, values in samples.items()}
    plain = medians["no ask"]
    print(f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} (2 cores)")
    for name, value in medians.items():
        print(f"W1 map, {name + ':':12} {value:9,.0f} tasks/s  {value / plain:.2f}x (median of {args.reps})")
    print("goal: cpu: 1 >= 0.95x")


if __name__ == "__main__":
    main()
