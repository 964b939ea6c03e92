"""A coordinator process that keeps calls waiting on a cluster, for fairness tests and benchmarks.

``python -m tests.helpers.keepbusy NS KEY LOG --mode single|map [--seconds S] [--keep K]``

* ``single``: ``K`` threads, each submitting one call and waiting for it, again and again (so
  ``K`` calls are always waiting);
* ``map``: ``Cluster.map`` over 2,048 items, again and again (a backlog of up to 2,048 calls).

Every call is ``stamped(KEY, LOG, S)`` (``tests/helpers/testtasks.py``): the worker appends
``KEY`` and the time each call ended to ``LOG``, so completions are counted where they happen,
whatever order a map yields them in. It prints ``ready`` once its first call came back, and
stops at SIGTERM or once the file ``LOG.KEY.stop`` exists.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from pyrocluster import Cluster

MAP_ITEMS = 2048


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ns")
    ap.add_argument("key")
    ap.add_argument("log")
    ap.add_argument("--mode", choices=("single", "map"), default="single")
    ap.add_argument("--seconds", type=float, default=0.05, help="how long each call sleeps")
    ap.add_argument("--keep", type=int, default=4, help="single calls kept waiting")
    args = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop_file = Path(f"{args.log}.{args.key}.stop")
    call = ("stamped", args.key, args.log, args.seconds)

    with Cluster(args.ns, wait=30) as cluster:
        cluster.submit("stamped", "warm-up", args.log, 0).result(timeout=30)
        print("ready", flush=True)

        def single() -> None:
            while not stop.is_set():
                cluster.submit(*call).result(timeout=60)

        def mapped() -> None:
            while not stop.is_set():
                items = [[args.key, args.log, args.seconds]] * MAP_ITEMS
                for _ in cluster.starmap("stamped", items):
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

        body, count = (single, args.keep) if args.mode == "single" else (mapped, 1)
        threads = [threading.Thread(target=guarded(body), daemon=True) for _ in range(count)]
        for t in threads:
            t.start()
        while not stop.wait(0.05):
            if stop_file.exists():
                stop.set()


if __name__ == "__main__":
    main()
