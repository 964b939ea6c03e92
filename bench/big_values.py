"""Big values: a float64 array echoed through one worker against a plain TCP round trip.

``python -m bench.big_values [MIB] [POOL]`` (default 256 MiB, the ``process`` pool). Three figures,
taken in one run on this machine:

* the echo's wall time through pyrocluster (coordinator in a child process, so its peak RSS is
  its own) against two local processes sending the same bytes to each other and back over a
  plain TCP socket (goal: throughput >= 0.5x that round trip);
* peak RSS of the coordinator and of the worker (its slot processes listed apart), against the
  value's size (goal: about one extra copy);
* the slowest ``status()`` answer from a third process while the value moves (goal: < 1 s).
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time

from bench.common import REPO_ROOT

CHUNK = 1 << 20


def coordinator(ns: str, mib: int) -> None:
    """The child that echoes the array: one JSON line with its wall time and peak RSS."""
    import numpy as np

    from pyrocluster import Cluster

    value = np.random.default_rng(1).random(mib * 131072)
    with Cluster(ns, wait=30, timeout=600) as cluster:
        cluster.submit("echo", 1).result(timeout=60)  # connected before the clock starts
        base_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        back = cluster.submit("echo", value).result(timeout=600)
        wall = time.perf_counter() - started
    assert np.array_equal(back, value)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "peak_mib": peak, "before_mib": base_mib}), flush=True)


def tcp_echo_server(size: int) -> None:
    """The child that reads ``size`` bytes and sends them back (the baseline's far end)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        print(server.getsockname()[1], flush=True)
        conn, _ = server.accept()
        with conn:
            data = bytearray(size)
            view, got = memoryview(data), 0
            while got < size:
                got += conn.recv_into(view[got : got + CHUNK])
            conn.sendall(data)


def tcp_round_trip(size: int) -> float:
    """Seconds to send ``size`` bytes to another local process over TCP and get them back."""
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.big_values", "--tcp-server", str(size)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    port = int(child.stdout.readline())
    payload = os.urandom(1024) * (size // 1024)
    with socket.create_connection(("127.0.0.1", port)) as conn:
        started = time.perf_counter()
        sender = threading.Thread(target=conn.sendall, args=(payload,))
        sender.start()
        back = bytearray(size)
        view, got = memoryview(back), 0
        while got < size:
            got += conn.recv_into(view[got : got + CHUNK])
        sender.join()
        wall = time.perf_counter() - started
    child.wait(timeout=60)
    assert back == payload
    return wall


def peak_mib(pid: int) -> float:
    """A live process's peak RSS (VmHWM) in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (slot processes are the forkserver's children)."""
    found, todo = [], [pid]
    while todo:
        children = [int(p) for p in os.popen(f"pgrep -P {todo.pop()}").read().split()]
        found += children
        todo += children
    return found


def main(mib: int, pool: str) -> None:
    from pyrocluster import Cluster
    from pyrocluster.local import start_nameserver, start_worker, stop_processes

    ns_proc, ns = start_nameserver()
    worker = start_worker(ns, ["--services", "compute", "--concurrency", "2", "--pool", pool])
    try:
        tcp_s = tcp_round_trip(mib * 1024 * 1024)
        answers: list[float] = []
        with Cluster(ns, wait=30) as watcher:
            watcher.status()
            child = subprocess.Popen(
                [sys.executable, "-m", "bench.big_values", "--coordinator", ns, str(mib)],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            while child.poll() is None:
                started = time.perf_counter()
                status = watcher.status()
                if status["workers"] and status["workers"][0].get("state") == "unreachable":
                    answers.append(float("inf"))
                else:
                    answers.append(time.perf_counter() - started)
                time.sleep(0.05)
            out, _ = child.communicate()
        echo = json.loads(out.strip().splitlines()[-1])
        slots = descendants(worker.pid)
        worker_peak = peak_mib(worker.pid)
        slot_peaks = [peak_mib(p) for p in slots]
    finally:
        stop_processes([worker, ns_proc])
    load = os.getloadavg()[0]
    ratio = tcp_s / echo["wall_s"]
    slowest = max(answers, default=0.0)
    print(f"big values: {mib} MiB float64 echo, {pool} pool, load {load:.1f} on {os.cpu_count()} CPUs")
    print(f"  plain TCP round trip    {tcp_s:8.2f} s ({2 * mib / tcp_s:7.0f} MiB/s both ways)")
    print(f"  pyrocluster echo        {echo['wall_s']:8.2f} s, ratio {ratio:.2f}x (goal >= 0.5x)")
    print(f"  coordinator peak RSS    {echo['peak_mib']:8.0f} MiB (before the echo {echo['before_mib']:.0f})")
    print(f"  worker peak RSS         {worker_peak:8.0f} MiB, children {[round(p) for p in slot_peaks]}")
    print(f"  status while it moves   {len(answers)} answers, slowest {slowest:.2f} s (goal < 1 s)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--coordinator"]:
        coordinator(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["--tcp-server"]:
        tcp_echo_server(int(sys.argv[2]))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 256, sys.argv[2] if len(sys.argv) > 2 else "process")
