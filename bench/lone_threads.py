"""Several threads each making one call at a time: ``cluster.submit("add", 1, 2).result()`` in a loop.

``python -m bench.lone_threads [--threads 1,2,4,8] [--calls N] [--rounds R]`` starts two local
workers (two process slots each) and, for each thread count, runs R rounds of N calls per thread,
all threads at once. It prints the median calls per second over the rounds and the coordinator
process's CPU per call, the way a web application's request threads call a cluster.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time


def main() -> None:
    """Run the rounds and print the medians."""
    ap = argparse.ArgumentParser(prog="python -m bench.lone_threads", description=__doc__)
    ap.add_argument("--threads", default="1,2,4,8")
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    from pyrocluster.coordinator.cluster import Cluster

    cluster = Cluster.local(workers=2)
    try:
        for _ in range(500):  # the direct path up, the costs learnt
            cluster.submit("add", 1, 2).result()

        def calls() -> None:
            for _ in range(args.calls):
                cluster.submit("add", 1, 2).result()

        print(f"{args.calls} lone calls per thread x {args.rounds} rounds, two local workers:")
        for n in map(int, args.threads.split(",")):
            rates, cpu = [], []
            for _ in range(args.rounds):
                threads = [threading.Thread(target=calls) for _ in range(n)]
                start, start_cpu = time.perf_counter(), time.process_time()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                rates.append(n * args.calls / (time.perf_counter() - start))
                cpu.append((time.process_time() - start_cpu) / (n * args.calls) * 1e6)
            spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
            print(
                f"  {n} thread(s): {statistics.median(rates):8,.0f} calls/s ({spread}), "
                f"coordinator CPU {statistics.median(cpu):.1f} us a call"
            )
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
