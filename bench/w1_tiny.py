"""W1 tiny: N trivial ``add(i, i)`` calls, every result back, in tasks per second.

pyrocluster: ``Cluster.map`` on two local workers with default settings; ``submit`` of an
equivalent job file (results file written, compacted and fsynced) both in this process
(``submit_job``, the target's figure) and as the CLI in a subprocess (start-up included).
Baselines: raw Pyro5 sequential calls and ``BatchProxy`` (daemon in a thread of this process,
and in a process of its own), ``multiprocessing.Pool`` (default chunks and chunksize=1), and a
serial loop.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

from bench import raw
from bench.common import Context, round_robin, run_cli
from bench.report import BASE, INFO, PYRO
from pyrocluster.tasks import add

NAME = "W1 tiny"


def write_job(path: Path, n: int) -> None:
    """A job file with one ``add`` task mapped over ``[i, i]`` for i < n."""
    lines = [
        "name: bench-w1",
        "defaults:",
        "  retries: 3",
        "  timeout: 60",
        "tasks:",
        "  - id: add",
        "    call: add",
        "    map:",
    ]
    lines += [f"      - [{i}, {i}]" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")


def count_lines(path: Path) -> int:
    """Lines in a file."""
    with path.open("rb") as f:
        return sum(1 for _ in f)


def run(ctx: Context) -> None:
    """Measure W1 tiny and add its rows and targets."""
    from pyrocluster.config import Settings
    from pyrocluster.jobs.submit import SubmitOptions, submit_job

    n = ctx.sizes.w1_items
    reps = ctx.sizes.reps
    items = [(i, i) for i in range(n)]
    expected = [2 * i for i in range(n)]
    cluster = ctx.default_cluster()
    ns = cluster.address
    tmp = Path(tempfile.mkdtemp(prefix="bench-w1-"))
    job = tmp / "w1.yaml"
    write_job(job, n)
    runs = iter(range(10**6))
    cli_job_wall: list[float] = []

    def check(results: list[int], what: str) -> None:
        if results != expected:
            raise AssertionError(f"{what}: wrong results")

    def pyro_map() -> float:
        start = time.perf_counter()
        results = list(cluster.starmap("add", items))
        wall = time.perf_counter() - start
        check(results, "Cluster.map")
        return n / wall

    settings = Settings.from_sources(ns=ns)

    def pyro_submit() -> float:
        out = tmp / f"inproc-{next(runs)}.jsonl"
        opts = SubmitOptions(job_file=str(job), out=str(out), wait_s=10.0)
        start = time.perf_counter()
        summary = submit_job(settings, opts, threading.Event())
        wall = time.perf_counter() - start
        if summary.ok != n or count_lines(out) != n:
            raise AssertionError(f"submit_job: {summary.ok} ok, {count_lines(out)} lines, expected {n}")
        out.unlink()
        return n / wall

    def pyro_cli() -> float:
        out = tmp / f"cli-{next(runs)}.jsonl"
        wall, proc = run_cli(["submit", str(job), "--ns", ns, "--quiet", "--json", "--out", str(out)])
        if proc.returncode != 0:
            raise AssertionError(f"pyrocluster submit exited {proc.returncode}: {proc.stderr.strip()}")
        summary = json.loads(proc.stdout)
        if summary["ok"] != n or count_lines(out) != n:
            raise AssertionError(f"pyrocluster submit: {summary}")
        cli_job_wall.append(summary["wall_s"])
        out.unlink()
        return n / wall

    ctx.log(f"{NAME}: raw Pyro5 daemons (in a thread, and in a process)")
    p_thread = raw.proxy(ctx.raw_thread())
    p_proc = raw.proxy(ctx.raw_process())

    def rate(fn: object, *args: object) -> float:
        start = time.perf_counter()
        results = fn(*args)  # type: ignore[operator]
        wall = time.perf_counter() - start
        check(list(results), getattr(fn, "__name__", "baseline"))
        return n / wall

    pool = ctx.pool(2)
    variants = {
        "map": pyro_map,
        "submit": pyro_submit,
        "cli": pyro_cli,
        "batch-thread": lambda: rate(raw.batched, p_thread, items),
        "batch-proc": lambda: rate(raw.batched, p_proc, items),
        "seq-thread": lambda: rate(raw.sequential, p_thread, items),
        "seq-proc": lambda: rate(raw.sequential, p_proc, items),
        "pool-chunked": lambda: rate(pool.starmap, add, items),
        "pool-1": lambda: rate(lambda: pool.starmap(add, items, chunksize=1)),
        "serial": lambda: rate(lambda: [add(a, b) for a, b in items]),
    }
    ctx.log(f"{NAME}: {n} add calls, {reps} reps (+1 warm-up) of {len(variants)} variants")
    s = round_robin(variants, reps, log=ctx.log)
    cli_job_wall = cli_job_wall[1:]  # drop the warm-up's
    p_thread._pyroRelease()
    p_proc._pyroRelease()
    shutil.rmtree(tmp, ignore_errors=True)

    rep = ctx.report
    u = "tasks/s"
    m = rep.add(NAME, "Cluster.map, 2 workers (default settings)", PYRO, u, s["map"], short="map")
    sub = rep.add(
        NAME, "submit job file, in process (submit_job, results file)", PYRO, u, s["submit"], short="submit"
    )
    rep.add(
        NAME, "`pyrocluster submit --quiet --json` subprocess (incl. interpreter start)", INFO, u, s["cli"]
    )
    rep.add(NAME, "  same, the job's own wall_s as tasks/s", INFO, u, [n / w for w in cli_job_wall])
    bp = rep.add(NAME, "raw Pyro5 BatchProxy, daemon in a thread", BASE, u, s["batch-thread"])
    bp_proc = rep.add(NAME, "raw Pyro5 BatchProxy, daemon in another process", BASE, u, s["batch-proc"])
    rep.add(NAME, "raw Pyro5 sequential calls, daemon in a thread", BASE, u, s["seq-thread"])
    rep.add(NAME, "raw Pyro5 sequential calls, daemon in another process", BASE, u, s["seq-proc"])
    rep.add(NAME, "multiprocessing.Pool(2).starmap, default chunks", BASE, u, s["pool-chunked"])
    rep.add(NAME, "multiprocessing.Pool(2).starmap, chunksize=1", BASE, u, s["pool-1"])
    rep.add(NAME, "serial loop in this process", BASE, u, s["serial"])
    r_map = rep.ratio(m, bp)
    r_sub = rep.ratio(sub, bp)
    rep.target(
        "W1 Cluster.map vs raw Pyro5 BatchProxy (daemon in a thread)",
        "throughput ratio >= 0.75",
        ">=",
        0.75,
        r_map,
        detail=f"best-of-n {rep.best_ratio(m, bp) or 0:.2f}x; vs the daemon in another "
        f"process {rep.compare(m, bp_proc)}",
    )
    rep.target(
        "W1 submit (in process, results file) vs raw Pyro5 BatchProxy",
        "throughput ratio >= 0.5",
        ">=",
        0.5,
        r_sub,
        detail=f"best-of-n {rep.best_ratio(sub, bp) or 0:.2f}x; vs the daemon in another "
        f"process {rep.compare(sub, bp_proc)}",
    )
