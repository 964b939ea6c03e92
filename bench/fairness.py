"""Coordinators sharing workers (SPEC 5.6), and what the fair admission costs, before and after.

Each side runs in a process of its own on its own copy of ``pyrocluster`` (this tree, and
``--base``, a git revision taken out with ``git archive``), so both are measured in one run:

1. three coordinators (``tests/helpers/keepbusy.py`` processes: one ``Cluster.map`` backlog of
   2,048 calls, two keeping 8 single calls waiting; every call sleeps 5 ms) on two
   2-slot thread workers for ``--seconds``: calls completed per coordinator, min/max (goal >= 0.8).
   The workers log when each call ended (``stamped``), so a map's calls count when they end;
2. W1 map (``Cluster.starmap("add")``, 20,000 items, two default local workers) in tasks/s and
   W1 latency (``submit("add", 1, 2).result()`` one at a time) in us/call, medians of ``--reps``,
   the two sides alternating.

``python -m bench.fairness [--seconds 30] [--reps 3] [--base REV]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TASKS = str(ROOT / "tests" / "helpers" / "testtasks.py")
W1_ITEMS = 20_000
LATENCY_CALLS = 500
COORDINATORS = (("map", "1"), ("single", "8"), ("single", "8"))
"""(mode, calls kept waiting) of each keepbusy coordinator."""


def shares(ns: str, seconds: float, tmp: Path) -> list[int]:
    """Calls each coordinator completed on the workers of ``ns`` over ``seconds``."""
    log = tmp / "calls.log"
    procs = []
    for i, (mode, keep) in enumerate(COORDINATORS):
        cmd = [sys.executable, "-m", "tests.helpers.keepbusy", ns, f"c{i}", str(log), "--mode", mode]
        procs.append(
            subprocess.Popen([*cmd, "--seconds", "0.005", "--keep", keep], stdout=subprocess.PIPE, text=True)
        )
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    start = time.time() + 1.0  # every coordinator's calls are waiting by then
    time.sleep(seconds + 1.5)
    for i in range(len(procs)):
        Path(f"{log}.c{i}.stop").touch()
    for proc in procs:
        proc.wait(timeout=60)
    counts = [0] * len(procs)
    for line in log.read_text().splitlines():
        key, at = line.split()
        if key.startswith("c") and start <= float(at) < start + seconds:
            counts[int(key[1:])] += 1
    return counts


def w1(reps: int) -> dict[str, list[float]]:
    """W1 map (tasks/s) and W1 latency (us/call) on ``Cluster.local(workers=2)``."""
    from pyrocluster import Cluster

    items = [(i, i) for i in range(W1_ITEMS)]
    out: dict[str, list[float]] = {"map": [], "latency": []}
    with Cluster.local(workers=2) as cluster:
        list(cluster.starmap("add", items[:2000]))  # warm-up: connections, batch sizes
        for _ in range(reps):
            start = time.perf_counter()
            if list(cluster.starmap("add", items)) != [2 * i for i in range(W1_ITEMS)]:
                raise AssertionError("Cluster.starmap: wrong results")
            out["map"].append(W1_ITEMS / (time.perf_counter() - start))
            start = time.perf_counter()
            for _ in range(LATENCY_CALLS):
                cluster.submit("add", 1, 2).result()
            out["latency"].append((time.perf_counter() - start) / LATENCY_CALLS * 1e6)
    return out


def side(what: str, seconds: float, reps: int) -> None:
    """One measurement on the ``pyrocluster`` this process imports; JSON on stdout."""
    if what == "w1":
        print(json.dumps(w1(reps)))
        return
    from pyrocluster import Cluster

    worker_args = ["--services", "compute", "--concurrency", "2", "--pool", "thread", "--tasks", TASKS]
    with tempfile.TemporaryDirectory() as tmp, Cluster.local(workers=2, worker_args=worker_args) as local:
        print(json.dumps({"shares": shares(local.address, seconds, Path(tmp))}))


def code_of(rev: str, into: Path) -> Path:
    """A directory whose ``pyrocluster`` package is the one of git revision ``rev``."""
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "pyrocluster"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    return into


def run_side(code: Path | None, what: str, seconds: float, reps: int) -> dict[str, Any]:
    """:func:`side` in a subprocess that imports ``pyrocluster`` from ``code`` (None: this tree).

    It runs in ``code`` (``python -m`` puts the current directory first on the path, and the
    processes it starts inherit it), with this tree on PYTHONPATH for ``bench`` and ``tests``.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "bench.fairness", "--side", what, "--seconds", str(seconds)]
    done = subprocess.run(
        [*cmd, "--reps", str(reps)], env=env, cwd=code or ROOT, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} side failed: {done.stderr.strip()[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def load_note() -> str:
    """The machine's load average, to read the figures by."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min), {os.cpu_count()} CPUs"


def main() -> None:
    """Measure both sides and print a small table."""
    ap = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--base", default="main", help="git revision to compare with (default main)")
    ap.add_argument("--side", choices=("w1", "shares"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        side(args.side, args.seconds, args.reps)
        return
    print(f"before: {args.base}; after: this tree; {load_note()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        base = code_of(args.base, Path(tmp))
        sides = {"before": base, "after": None}
        w1s: dict[str, dict[str, list[float]]] = {k: {"map": [], "latency": []} for k in sides}
        for _ in range(2):  # alternate, so drift in the machine's load hits both alike
            for name, code in sides.items():
                for key, samples in run_side(code, "w1", 0, args.reps).items():
                    w1s[name][key] += samples
        counts = {name: run_side(code, "shares", args.seconds, 0)["shares"] for name, code in sides.items()}
    for name in sides:
        m, lat = statistics.median(w1s[name]["map"]), statistics.median(w1s[name]["latency"])
        got = counts[name]
        ratio = min(got) / max(1, max(got))
        print(
            f"{name:<7} W1 map {m:>8,.0f} tasks/s  W1 latency {lat:>6,.0f} us/call  "
            f"three coordinators {args.seconds:g} s: {got} calls, min/max {ratio:.2f} (goal >= 0.8)"
        )
    after_map = statistics.median(w1s["after"]["map"]) / statistics.median(w1s["before"]["map"])
    after_lat = statistics.median(w1s["after"]["latency"]) / statistics.median(w1s["before"]["latency"])
    print(f"after/before: W1 map {after_map:.2f}x, W1 latency {after_lat:.2f}x; {load_note()}")


if __name__ == "__main__":
    main()
