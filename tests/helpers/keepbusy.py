"""A coordinator process that keeps calls waiting on a cluster, for fairness tests and benchmarks.

``python -m tests.helpers.keepbusy NS KEY LOG --mode single|map [--seconds S] [--keep K]``

* ``single``: ``K`` calls submitted one by one, each replaced by a new one when it completes
  (so ``K`` single calls are always waiting);
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
from typing import Any

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

        def resubmit(future: Any) -> None:
            if not stop.is_set() and not future.cancelled() and future.exception() is None:
                cluster.submit(*call).add_done_callback(resubmit)

        def single() -> None:
            for _ in range(args.keep):
                cluster.submit(*call).add_done_callback(resubmit)

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

        if args.mode == "single":
            single()
        else:
            threading.Thread(target=guarded(mapped), daemon=True).start()
        while not stop.wait(0.05):
            if stop_file.exists():
                stop.set()


if __name__ == "__main__":
    main()
