"""A coordinator process that keeps calls waiting on a cluster and logs when each one completes.

``python -m tests.helpers.keepbusy NS OUT --mode single|map [--seconds S] [--keep K]``

* ``single``: ``K`` threads, each submitting one call and waiting for it, again and again (so
  ``K`` calls are always waiting);
* ``map``: ``Cluster.map`` over 2,048 items, again and again (a backlog of up to 2,048 calls).

The calls are ``interval(S)`` (``tests/helpers/testtasks.py``). It prints ``ready`` once the
cluster is connected, appends to ``OUT`` one line per completed call (when it ended on the
worker), and stops at SIGTERM or once the file ``OUT.stop`` exists.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from pyrocluster import Cluster

MAP_ITEMS = 2048


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ns")
    ap.add_argument("out", type=Path)
    ap.add_argument("--mode", choices=("single", "map"), default="single")
    ap.add_argument("--seconds", type=float, default=0.05, help="how long each call sleeps")
    ap.add_argument("--keep", type=int, default=4)
    args = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop_file = Path(f"{args.out}.stop")
    lock = threading.Lock()
    done: list[float] = []

    def record(result: list) -> None:
        with lock:
            done.append(float(result[2]))  # when the call ended on the worker

    with Cluster(args.ns, wait=30) as cluster:
        cluster.submit("interval", 0).result(timeout=30)  # connected, the worker answers
        print("ready", flush=True)

        def single() -> None:
            while not stop.is_set():
                record(cluster.submit("interval", args.seconds).result(timeout=60))

        def mapped() -> None:
            while not stop.is_set():
                for result in cluster.map("interval", [args.seconds] * MAP_ITEMS):
                    record(result)
                    if stop.is_set():
                        return

        def guarded(body: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    body()
                except Exception:  # the cluster closes under it at the end
                    if not stop.is_set():
                        raise

            return run

        target = guarded(single) if args.mode == "single" else guarded(mapped)
        threads = [
            threading.Thread(target=target, daemon=True)
            for _ in range(args.keep if args.mode == "single" else 1)
        ]
        for t in threads:
            t.start()
        while not stop.is_set() and not stop_file.exists():
            stop.wait(0.05)
            with lock:
                lines, done[:] = done[:], []
            with args.out.open("a") as f:
                f.writelines(f"{t:.6f}\n" for t in lines)
        stop.set()
        with lock:
            lines = list(done)
        with args.out.open("a") as f:
            f.writelines(f"{t:.6f}\n" for t in lines)
    sys.exit(0)


if __name__ == "__main__":
    main()
