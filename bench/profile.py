"""Where the time goes: run one workload under py-spy, sampling the coordinator and every worker.

``python -m bench.profile map|submit|latency|crawl [--seconds S] [--top N]`` starts the same
local cluster as the benchmark, warms up, then repeats the workload for ``S`` seconds while
``py-spy record --subprocesses --threads --gil`` samples this process and its children (the
name server, the workers and their slot processes). It prints the CPU seconds each process
role used (psutil), then per role the samples per thread and the functions with the most
samples, inclusive and exclusive (self). Needs ``py-spy``
(``pip install py-spy``) and ptrace rights (root, or ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

_PROC = re.compile(r'^process \d+:"(.*)"$')
_THREAD = re.compile(r"^thread \(\w+\): (.*)$")
_SKIP = (
    "Thread._bootstrap",
    "Thread.run (threading",
    "<module>",
    "_run_code (<frozen runpy>",
    "_run_module_as_main",
)


def role_of(cmdline: str) -> str:
    """A short name for a process from its command line."""
    if "pyrocluster worker" in cmdline:
        return "worker"
    if "multiprocessing" in cmdline or "spawn_main" in cmdline or "from multiprocessing" in cmdline:
        return "slot process"
    if "pyrocluster nameserver" in cmdline:
        return "name server"
    return "coordinator"


def thread_group(name: str) -> str:
    """Group numbered thread names (``Pyro-Worker-1234``, ``send-w-9-compute``) into families."""
    name = re.sub(r"-?\d+", "#", name)
    name = re.sub(r"send-.*-(\w+)$", r"send-<worker>-\1", name)
    name = re.sub(r"probe-.*", "probe-<worker>", name)
    return name


def parse(path: Path) -> dict[str, Any]:
    """Aggregate a py-spy raw (collapsed) file by process role, thread family and function."""
    roles: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"samples": 0, "threads": Counter(), "self": Counter(), "total": Counter()}
    )
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        # a command line may hold ';' (python -c "a; b"): take them out before splitting frames
        stack = re.sub(r'process \d+:"[^"]*"', lambda m: m.group(0).replace(";", ","), stack)
        frames = stack.split(";")
        role, thread = "coordinator", "?"
        calls: list[str] = []
        for frame in frames:
            if (m := _PROC.match(frame)) is not None:
                role, calls = role_of(m.group(1)), []
            elif (m := _THREAD.match(frame)) is not None:
                thread, calls = thread_group(m.group(1)), []
            elif not frame.startswith(_SKIP):
                calls.append(re.sub(r" \((/[^:]*/)?", " (", frame))
        r = roles[role]
        r["samples"] += count
        r["threads"][thread] += count
        if calls:
            r["self"][calls[-1]] += count
            for fn in set(calls):
                r["total"][fn] += count
    return roles


def render(roles: dict[str, Any], seconds: float, rate: int, top: int) -> str:
    """Text report of :func:`parse`'s aggregate."""
    out = []
    for role, r in sorted(roles.items(), key=lambda kv: -kv[1]["samples"]):
        busy = r["samples"] / rate
        out.append(f"== {role}: {busy:.2f} s of busy samples in {seconds:.1f} s (all processes of this role)")
        out.append(
            "   threads: " + ", ".join(f"{t} {c / r['samples']:.0%}" for t, c in r["threads"].most_common(6))
        )
        out.append("   inclusive:")
        out += [f"     {c / r['samples']:6.1%}  {fn}" for fn, c in r["total"].most_common(top)]
        out.append("   self:")
        out += [f"     {c / r['samples']:6.1%}  {fn}" for fn, c in r["self"].most_common(top)]
    return "\n".join(out)


def cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process and its descendants, and of nginx, by role."""
    import psutil

    me = psutil.Process()
    out: dict[str, float] = defaultdict(float)
    procs = [me, *me.children(recursive=True)]
    for p in psutil.process_iter(["name"]):
        if p.info["name"] == "nginx":
            procs.append(p)
    for p in procs:
        try:
            if p.name() == "py-spy":
                continue  # the profiler itself
            t = p.cpu_times()
            role = (
                "nginx"
                if p.name() == "nginx"
                else ("coordinator" if p.pid == me.pid else role_of(" ".join(p.cmdline())))
            )
            if role == "coordinator" and p.pid != me.pid:
                role = "other child"
            out[role] += t.user + t.system
        except psutil.Error:
            pass
    return out


def workload(
    name: str, cluster: Any, ns: str, tmp: Path, closers: list[Callable[[], None]]
) -> Callable[[], int]:
    """One repetition of the named workload (how many tasks or pages it did); ``closers`` get its cleanup."""
    if name == "map":
        items = [(i, i) for i in range(20_000)]
        return lambda: len(list(cluster.starmap("add", items)))
    if name == "latency":

        def latency() -> int:
            for _ in range(500):
                cluster.submit("add", 1, 2).result()
            return 500

        return latency
    if name == "submit":
        from bench.w1_tiny import write_job
        from pyrocluster.config import Settings
        from pyrocluster.jobs.submit import SubmitOptions, submit_job

        job = tmp / "job.yaml"
        write_job(job, 20_000)
        settings = Settings.from_sources(ns=ns)
        return lambda: (
            submit_job(
                settings, SubmitOptions(job_file=str(job), out=str(tmp / "out.jsonl")), threading.Event()
            ).ok
        )
    if name == "crawl":
        from bench.site import Site
        from bench.w3_crawl import crawl_cluster

        site = Site(3000)
        closers.append(site.close)
        return lambda: crawl_cluster(cluster, site.url, 3100)
    raise SystemExit(f"unknown workload {name!r}: map, submit, latency or crawl")


def main() -> None:
    """Profile one workload; print the aggregate."""
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    ap.add_argument("workload", choices=["map", "submit", "latency", "crawl"])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rate", type=int, default=200, help="samples per second per process")
    ap.add_argument("--top", type=int, default=18)
    ap.add_argument("--keep", metavar="DIR", help="keep the raw py-spy files here")
    ap.add_argument(
        "--all-threads",
        action="store_true",
        help="sample every thread, not only the one holding the GIL (py-spy cannot always tell a "
        "thread blocked in recv() from a running one, so this view is closer to wall time)",
    )
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy not found: pip install py-spy")
    from pyrocluster.coordinator.cluster import Cluster

    worker_args = ["--services", "crawl"] if args.workload == "crawl" else []
    cluster = Cluster.local(workers=2, worker_args=worker_args)
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench-profile-"))
    tmp.mkdir(parents=True, exist_ok=True)
    closers: list[Callable[[], None]] = []
    try:
        assert cluster.local_cluster is not None
        run = workload(args.workload, cluster, cluster.address, tmp, closers)
        run()
        run()  # warm-up
        pids = [os.getpid()]  # --subprocesses: the workers and their slot processes are our children
        files = [tmp / f"spy-{pid}.txt" for pid in pids]
        gil = [] if args.all_threads else ["--gil"]
        spies = [
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--subprocesses",
                    "--threads",
                    "--nonblocking",
                    *gil,
                    "--rate",
                    str(args.rate),
                    "--format",
                    "raw",
                    "-o",
                    str(f),
                    "--duration",
                    str(int(args.seconds + 2)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for pid, f in zip(pids, files, strict=True)
        ]
        time.sleep(1.0)  # py-spy attached
        cpu_before = cpu_by_role()
        start = time.perf_counter()
        done = reps = 0
        while time.perf_counter() - start < args.seconds:
            done += run()
            reps += 1
        wall = time.perf_counter() - start
        cpu = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_by_role().items()}
        for s in spies:
            s.wait()
    finally:
        cluster.close()
        for close in closers:
            close()
    print(
        f"{args.workload}: {reps} repetitions, {done} tasks in {wall:.2f} s = {done / wall:,.0f}/s "
        f"under py-spy (rate {args.rate}/s; the workload ran {wall:.1f} s of the "
        f"~{args.seconds + 2:.0f} s sampled)"
    )
    print(
        f"CPU seconds used while the workload ran {wall:.1f} s (psutil, per role; the machine has "
        f"{os.cpu_count()} CPUs = {wall * (os.cpu_count() or 1):.1f} CPU-s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
    )
    print(
        "Samples below are of the thread holding the GIL (running Python), per process role."
        if not args.all_threads
        else "Samples below are of every thread (wall time, waits included)."
    )
    roles: dict[str, Any] = {}
    for f in files:
        if f.exists():
            for role, r in parse(f).items():
                if role in roles:
                    roles[role]["samples"] += r["samples"]
                    for key in ("threads", "self", "total"):
                        roles[role][key].update(r[key])
                else:
                    roles[role] = r
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print(render(roles, args.seconds + 2, args.rate, args.top))


if __name__ == "__main__":
    main()
