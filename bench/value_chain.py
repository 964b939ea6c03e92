"""A chain of tasks each passing a big array to the next: the coordinator's memory and wall time.

``python -m bench.value_chain [LINKS] [MIB]`` (default 10 links of 100 MiB). One run, side by side,
on two local workers (thread pools, 2 slots each):

* ``job, near``: a job file of the chain through ``submit``; each link may run on the worker
  holding its argument (no transfer at all);
* ``job, apart``: the same job with the links tagged to alternate between the two workers, so every
  value goes worker to worker;
* ``API, futures as arguments``: the chain as ``submit`` calls each given the previous future;
* ``API, through coordinator``: the baseline, the chain as ``map`` calls of one item, each value
  coming back to the coordinator in the reply and going out again (what a job did before values
  stayed on the workers).

Each is measured in a child process of its own: its peak RSS (goal for the jobs: <= 150 MB) and
its wall time. Dask is not installed here, so no Dask figure is taken.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import REPO_ROOT

TASKS = str(Path(__file__).with_name("_chain_tasks.py"))


def chain_job(links: int, mib: int, apart: bool) -> str:
    """The job file's text: ``t0`` makes the array, each next link passes it on."""
    tag = (lambda i: f", tags: [{'ab'[i % 2]}]") if apart else (lambda i: "")
    lines = [f"name: chain\ntasks:\n  - {{id: t0, call: make_array, args: [{mib}]{tag(0)}}}"]
    lines += [
        f"  - {{id: t{i}, call: next_array, args: [{{$result: t{i - 1}}}]{tag(i)}}}" for i in range(1, links)
    ]
    return "\n".join(lines) + "\n"


def measured(args: list[str], cwd: str) -> tuple[float, float, str]:
    """Run ``args`` as the only child of a fresh process: (wall s, peak RSS MB, its output)."""
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter(); r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(r.stdout[-2000:] + r.stderr[-2000:]); print('WALL', time.perf_counter() - t)\n"
        "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(r.returncode)\n"
    )
    done = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"{args[:4]} failed: {done.stdout[-3000:]}{done.stderr[-3000:]}")
    wall = float(done.stdout.rsplit("WALL", 1)[1].split()[0])
    peak_mb = int(done.stdout.rsplit("PEAK", 1)[1].split()[0]) * 1024 / 1e6
    return wall, peak_mb, done.stdout


def api_chain(ns: str, links: int, mib: int, futures: bool) -> None:
    """A child running the chain through the Python API: futures as arguments (the values go
    worker to worker), or each value through this process (``map``: its results come in the reply)."""
    from pyrocluster import Cluster

    with Cluster(ns, wait=30, timeout=600) as cluster:
        if futures:
            future = cluster.submit("make_array", mib)
            for _ in range(1, links):
                future = cluster.submit("next_array", future)
            first = float(future.result(timeout=600)[0])
        else:
            value = next(cluster.map("make_array", [mib]))
            for _ in range(1, links):
                value = next(cluster.map("next_array", [value]))
            first = float(value[0])
    print("last", first)


def main(links: int, mib: int) -> None:
    from pyrocluster.local import start_nameserver, start_worker, stop_processes

    ns_proc, ns = start_nameserver()
    workers = [
        start_worker(
            ns, ["--name", name, "--tags", tag, "--concurrency", "2", "--pool", "thread", "--tasks", TASKS]
        )
        for name, tag in (("wa", "a"), ("wb", "b"))
    ]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for label, apart in (("job, near", False), ("job, apart", True)):
                job = Path(tmp) / f"chain-{int(apart)}.yaml"
                job.write_text(chain_job(links, mib, apart))
                submit = [sys.executable, "-m", "pyrocluster", "submit", str(job), "--ns", ns, "--quiet"]
                wall, peak, _ = measured(submit, tmp)
                rows.append((label, wall, peak))
                for leftover in Path(tmp).glob("*.values"):
                    for f in leftover.iterdir():
                        f.unlink()
            for label, how in (("API, futures as arguments", "futures"), ("API, through coordinator", "map")):
                api = [sys.executable, "-m", "bench.value_chain", "--api", ns, str(links), str(mib), how]
                wall, peak, _ = measured(api, REPO_ROOT)
                rows.append((label, wall, peak))
    finally:
        stop_processes([*workers, ns_proc])
    load = os.getloadavg()[0]
    print(f"value chain: {links} links of {mib} MiB, 2 workers, load {load:.1f} on {os.cpu_count()} CPUs")
    for label, wall, peak in rows:
        print(f"  {label:26s} {wall:7.2f} s   coordinator peak RSS {peak:6.0f} MB")
    print("  goal: the jobs' coordinator peak RSS <= 150 MB (Dask not installed: no Dask figure)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--api"]:
        api_chain(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "futures")
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 10, int(sys.argv[2]) if len(sys.argv) > 2 else 100)
