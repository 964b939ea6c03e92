"""What awaiting a lone call's reply awake buys and costs (``coordinator/wire/replyspin.py``).

``python -m bench.reply_spin [--calls N] [--rounds R]`` starts two local workers and runs N lone
``cluster.submit("add", 1, 2).result()`` calls one at a time, R rounds, alternating the reply
spin on (its default window) and off (window 0) on the same cluster, so both see the same
workers and the same machine. It prints, per setting, the median over rounds of the wall time
and of the calling thread's CPU (``time.thread_time``) per call, and how many spins caught
their reply or ran out.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    """Run the rounds and print the medians."""
    ap = argparse.ArgumentParser(prog="python -m bench.reply_spin", description=__doc__)
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()

    from pyrocluster.coordinator.cluster import Cluster

    cluster = Cluster.local(workers=2)
    try:
        awake = cluster._dispatcher._awake
        window = awake.window_s
        submit = cluster.submit
        for _ in range(500):  # the direct path up, the costs learnt
            submit("add", 1, 2).result()
        wall: dict[str, list[float]] = {"on": [], "off": []}
        cpu: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(args.rounds):
            for setting in ("on", "off"):
                awake.window_s = window if setting == "on" else 0.0
                start, start_cpu = time.perf_counter(), time.thread_time()
                for _ in range(args.calls):
                    submit("add", 1, 2).result()
                wall[setting].append((time.perf_counter() - start) / args.calls * 1e6)
                cpu[setting].append((time.thread_time() - start_cpu) / args.calls * 1e6)
        print(f"{args.calls} lone calls x {args.rounds} rounds each way, two local workers (us per call):")
        for setting in ("on", "off"):
            label = f"spin {window * 1e6:.0f} us" if setting == "on" else "spin off"
            print(
                f"  {label:>12}: wall {statistics.median(wall[setting]):6.1f} "
                f"({min(wall[setting]):.1f}-{max(wall[setting]):.1f}), calling thread's CPU "
                f"{statistics.median(cpu[setting]):6.1f}"
            )
        print(f"  spins: {awake.caught_replies} caught their reply, {awake.missed_replies} ran out")
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
