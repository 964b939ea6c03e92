"""Echo one big float64 array through a cluster in its own process: ``bigecho.py NS MIB``.

Prints one JSON line: whether the value came back equal, the seconds it took and this process's
peak RSS in MiB (a test measures the cluster's responsiveness from another process meanwhile).
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np

from pyrocluster import Cluster


def main(ns: str, mib: int) -> None:
    value = np.random.default_rng(7).random(mib * 131072)
    with Cluster(ns, wait=30, timeout=300) as cluster:
        started = time.monotonic()
        back = cluster.submit("echo", value).result(timeout=300)
        took = time.monotonic() - started
    equal = bool(isinstance(back, np.ndarray) and back.dtype == value.dtype and np.array_equal(back, value))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"equal": equal, "seconds": took, "peak_rss_mib": peak_mib}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
