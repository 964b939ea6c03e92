"""Start-up: ``import pyrocluster.cli`` and ``pyrocluster submit JOB --local 2`` to its first task.

Each sample runs a fresh interpreter. The submit job has one task, ``stamp`` (a user task file
passed with ``--tasks``), which returns ``time.time()`` when a slot runs it: process start to
that stamp is the start-up a user waits through (name server, two workers, their readiness,
the job's checks, the first dispatch). Wall time needs a quiet machine, so every row also has
its CPU seconds (the command and all its children, ``RUSAGE_CHILDREN``), which hold under load.

The submit is measured twice. Once with its bytecode cached, as ``pip install`` leaves an
installed package (``PYTHONPYCACHEPREFIX`` names a cache that an untimed first run fills; the
target row). And once as the environment runs it from this source tree: under
``PYTHONDONTWRITEBYTECODE`` with no ``__pycache__`` in the tree, as on the benchmark machine,
every process compiles each pyrocluster module it imports at every start (about 0.25 s there).
``python -m bench.startup [--reps N]`` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO_ROOT, Context
from bench.report import INFO, PYRO

NAME = "startup"
IMPORT_TARGET_S = 0.15
FIRST_TASK_TARGET_S = 0.8

STAMP_TASKS = '''"""A task that says when it ran."""
import time

from pyrocluster import task


@task
def stamp() -> float:
    """The wall clock when a slot ran this call."""
    return time.time()
'''

JOB = """name: bench-startup
tasks:
  - id: first
    call: stamp
"""


def children_cpu() -> float:
    """CPU seconds (user + system) of every reaped child so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def import_cli(reps: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``python -c 'import pyrocluster.cli'`` (interpreter start included)."""
    walls, cpus = [], []
    for _ in range(reps):
        cpu0, t0 = children_cpu(), time.perf_counter()
        subprocess.run([sys.executable, "-c", "import pyrocluster.cli"], cwd=REPO_ROOT, check=True)
        walls.append(time.perf_counter() - t0)
        cpus.append(children_cpu() - cpu0)
    return walls, cpus


def submit_local(reps: int, cached: bool = True) -> tuple[list[float], list[float]]:
    """Wall seconds from process start to the first task running, and CPU seconds of the whole
    ``submit --local 2`` (its workers and their fork servers included), per rep; with the
    bytecode ``cached`` (after an untimed run that writes it) or as the environment has it."""
    walls, cpus = [], []
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        folder = Path(tmp)
        (folder / "stamp_tasks.py").write_text(STAMP_TASKS)
        (folder / "job.yaml").write_text(JOB)
        env = dict(os.environ)
        if cached:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(folder / "bytecode")
        for rep in range(-1 if cached else 0, reps):
            out = folder / f"out-{rep}.jsonl"
            cmd = [sys.executable, "-m", "pyrocluster", "submit", str(folder / "job.yaml"), "--local", "2"]
            cmd += ["--tasks", str(folder / "stamp_tasks.py"), "--out", str(out), "--quiet"]
            cpu0 = children_cpu()
            started = time.time()
            subprocess.run(cmd, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL, env=env)
            if rep < 0:
                continue  # the run that fills the bytecode cache
            cpus.append(children_cpu() - cpu0)
            records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
            ran = next(r["result"] for r in records if r.get("id") == "first")
            walls.append(float(ran) - started)
    return walls, cpus


def run(ctx: Context) -> None:
    """Measure both start-ups and add their rows and targets."""
    reps = ctx.sizes.reps
    rep = ctx.report
    walls, cpus = import_cli(reps)
    ctx.log(f"{NAME}: import pyrocluster.cli wall {min(walls):.3f} s, CPU {min(cpus):.3f} s (best)")
    row = rep.add(NAME, "`python -c 'import pyrocluster.cli'`, wall", PYRO, "s", walls, short="import cli")
    rep.add(NAME, "`python -c 'import pyrocluster.cli'`, CPU", INFO, "s", cpus, short="import cli CPU")
    rep.target(NAME, "import pyrocluster.cli", "<=", IMPORT_TARGET_S, row.median, f"CPU {min(cpus):.3f} s")
    walls, cpus = submit_local(reps, cached=False)
    uncached = statistics.median(walls)
    ctx.log(f"{NAME}: submit --local 2 uncached: first task {min(walls):.3f} s, CPU {min(cpus):.3f} s")
    rep.add(
        NAME,
        "`submit --local 2`, bytecode as the environment has it: start to first task, wall",
        INFO,
        "s",
        walls,
    )
    rep.add(
        NAME,
        "`submit --local 2`, bytecode as the environment has it: CPU of all its processes",
        INFO,
        "s",
        cpus,
    )
    walls, cpus = submit_local(reps)
    ctx.log(f"{NAME}: submit --local 2 to first task {min(walls):.3f} s, CPU of the run {min(cpus):.3f} s")
    row = rep.add(
        NAME, "`submit --local 2`, bytecode cached: process start to first task run, wall", PYRO, "s", walls
    )
    rep.add(NAME, "`submit --local 2`, bytecode cached: CPU of the command and its children", INFO, "s", cpus)
    rep.target(
        NAME,
        "submit --local 2 to first task",
        "<=",
        FIRST_TASK_TARGET_S,
        row.median,
        f"CPU {min(cpus):.3f} s; {uncached:.2f} s when every start compiles the pyrocluster modules",
    )


def summary(walls: list[float], cpus: list[float]) -> str:
    """Median and best of the wall and CPU seconds."""
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return f"wall {wall:.3f} s (best {min(walls):.3f}), CPU {cpu:.3f} s (best {min(cpus):.3f})"


def main() -> None:
    """Run alone and print the figures."""
    ap = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", choices=["import", "submit"], default=None)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    if args.only != "submit":
        w, c = import_cli(args.reps)
        print(f"import pyrocluster.cli: {summary(w, c)}; load at start {load:.1f}")
    if args.only != "import":
        w, c = submit_local(args.reps)
        print(f"submit --local 2 to first task, bytecode cached: {summary(w, c)}; load at start {load:.1f}")
        w, c = submit_local(args.reps, cached=False)
        print(f"submit --local 2 to first task, bytecode as the environment has it: {summary(w, c)}")


if __name__ == "__main__":
    main()
