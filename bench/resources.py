"""What asking resources costs: W1 map with an explicit ``cpu: 1`` ask against no ask.

``Cluster.starmap("add")`` over ``--items`` items on two default local workers (process slots),
the variants alternating (``bench.common.round_robin``) so drift hits all alike; tasks/s,
medians of ``--reps``. An explicit ``cpu: 1`` is the default, so it travels as no ask (the
five-element call); ``licence: 1`` (the workers have ``licence=1000000``) shows what an ask that
travels with each call (a sixth element, read once per batch at the worker) costs. Goal for
``cpu: 1``: >= 0.95x.

``python -m bench.resources [--items 20000] [--reps 5]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from bench.common import round_robin
from pyrocluster import Cluster


def main() -> None:
    """Run both variants and print tasks/s and the ratio, with the load average."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
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
