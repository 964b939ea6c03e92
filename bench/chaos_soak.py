"""Chaos soak: a long job while a seeded random schedule kills, pauses and restarts workers.

    python bench/chaos_soak.py --seconds 300            # or: python -m bench.chaos_soak --seconds 300

A name server and ``--workers`` workers on loopback run one ``pyrocluster submit`` job of
``soak`` tasks (each appends its key to an execution log, sleeps ``--task-ms`` and returns its
key). For ``--seconds`` a schedule drawn from ``--seed`` picks, every ``--every`` seconds or so,
one of: SIGKILL a worker, SIGSTOP it (SIGCONT a few seconds later), or restart a killed worker
under its old name. At least one worker is always left running. Then every worker is resumed or
restarted and the job finishes.

It prints, and with ``--json`` writes as one object: tasks, kills, pauses, restarts, ``lost``
(tasks with no ``ok`` line in the final results file), ``duplicated`` (outcomes recorded more than
once, counted in the raw append log before ``submit`` compacts the file, plus extra lines in the
final file), ``re_executed`` (runs beyond one per task: execution is at-least-once, so a worker
that was paused or cut off may finish a call that already ran elsewhere), retried and wall time.
Exit status 0 when lost and duplicated are both 0. ``tests/reliability/test_chaos.py`` runs a
bounded version of this in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from pyrocluster.local import ManagedProcess, start_nameserver, start_worker

TASKS_MODULE = '''\
"""The chaos soak's task: log the execution, sleep, return the key."""
import os
import time

from pyrocluster import task


@task
def soak(key: int, log: str, seconds: float) -> int:
    """Append ``key`` to ``log`` (one write, so lines never interleave), sleep, return ``key``."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"%d\\n" % key)
    finally:
        os.close(fd)
    time.sleep(seconds)
    return key
'''
MIN_TASKS = 5000
"""Fewest tasks in a soak job."""
EFFICIENCY = 0.6
"""Share of the ideal task rate the job keeps under chaos; sizes the job to outlast the schedule."""


@dataclass
class SoakFigures:
    """What a soak did and what came out of it."""

    seed: int
    seconds: float
    tasks: int
    kills: int = 0
    pauses: int = 0
    restarts: int = 0
    lost: int = 0
    duplicated: int = 0
    re_executed: int = 0
    retried: int = 0
    max_attempts: int = 0
    failed: int = 0
    exit_code: int | None = None
    wall_s: float = 0.0
    events: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The figures on one line."""
        return (
            f"tasks {self.tasks}  kills {self.kills}  pauses {self.pauses}  restarts {self.restarts}  "
            f"lost {self.lost}  duplicated {self.duplicated}  re-executed {self.re_executed}  "
            f"retried {self.retried}  max attempts {self.max_attempts}  failed {self.failed}  "
            f"exit {self.exit_code}  wall {self.wall_s:.1f} s"
        )


class RawTail:
    """Every line ever appended to a results file, read through a descriptor held open across compaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids: list[str] = []
        self._file: IO[bytes] | None = None
        self._partial = b""

    def poll(self) -> int:
        """Read what is new; the number of lines read so far."""
        if self._file is None:
            if not self.path.exists():
                return 0
            self._file = open(self.path, "rb")  # noqa: SIM115 - held until close()
        *lines, self._partial = (self._partial + self._file.read()).split(b"\n")
        self.ids.extend(json.loads(line)["id"] for line in lines if line.strip())
        return len(self.ids)

    def close(self) -> None:
        """Stop following."""
        if self._file is not None:
            self._file.close()


class Chaos:
    """The workers and the seeded schedule that torments them."""

    def __init__(
        self,
        ns: str,
        worker_args: list[str],
        workers: int,
        rng: random.Random,
        figures: SoakFigures,
        pause_s: tuple[float, float] = (1.0, 4.0),
    ) -> None:
        self.ns = ns
        self.worker_args = worker_args
        self.rng = rng
        self.figures = figures
        self.pause_s = pause_s
        self.names = [f"chaos-w{i}" for i in range(workers)]
        self.procs: dict[str, ManagedProcess] = {}
        self.state: dict[str, str] = {}
        self.resume_at: dict[str, float] = {}
        self.retired: list[ManagedProcess] = []
        self.started = time.monotonic()

    def start(self) -> None:
        """Start every worker and wait until all are ready."""
        for name in self.names:
            self.procs[name] = start_worker(self.ns, [*self.worker_args, "--name", name], wait=False)
        for name in self.names:
            self.procs[name].wait_ready()
            self.state[name] = "up"

    def _log(self, what: str) -> None:
        self.figures.events.append(f"{time.monotonic() - self.started:6.2f}s {what}")

    def _restart(self, name: str) -> None:
        self.retired.append(self.procs[name])
        self.procs[name] = start_worker(self.ns, [*self.worker_args, "--name", name], wait=True)
        self.state[name] = "up"
        self.figures.restarts += 1
        self._log(f"restart {name}")

    def resume_due(self, now: float) -> None:
        """SIGCONT every paused worker whose pause is over."""
        for name, at in list(self.resume_at.items()):
            if now >= at:
                self.procs[name].signal(signal.SIGCONT)
                self.state[name] = "up"
                del self.resume_at[name]
                self._log(f"resume {name}")

    def step(self) -> None:
        """One random event: restart a dead worker, or kill or pause a running one (never the last)."""
        up = [n for n in self.names if self.state[n] == "up"]
        dead = [n for n in self.names if self.state[n] == "dead"]
        if dead and (len(up) < 2 or self.rng.random() < 0.35):
            self._restart(self.rng.choice(dead))
            return
        if len(up) < 2:
            return  # the rest are paused: wait for them
        victim = self.rng.choice(up)
        if self.rng.random() < 0.5:
            self.procs[victim].signal(signal.SIGKILL)
            self.procs[victim].proc.wait()
            self.state[victim] = "dead"
            self.figures.kills += 1
            self._log(f"SIGKILL {victim}")
        else:
            self.procs[victim].signal(signal.SIGSTOP)
            self.state[victim] = "paused"
            self.resume_at[victim] = time.monotonic() + self.rng.uniform(*self.pause_s)
            self.figures.pauses += 1
            self._log(f"SIGSTOP {victim}")

    def heal(self) -> None:
        """Resume the paused and restart the dead, so the job can finish."""
        self.resume_due(float("inf"))
        for name in self.names:
            if self.state[name] == "dead":
                self._restart(name)

    def close(self) -> None:
        """Stop every worker this soak started."""
        everyone = [*self.procs.values(), *self.retired]
        for proc in everyone:
            proc.signal(signal.SIGCONT)
            proc.signal(signal.SIGTERM)
        for proc in everyone:
            proc.stop(timeout_s=5)


def write_job(path: Path, tasks: int, log: Path, task_s: float, retries: int | None) -> None:
    """The soak job: ``soak-<k>`` runs ``soak(k, log, task_s)``."""
    items = ", ".join(f"[{k}, {json.dumps(str(log))}, {task_s}]" for k in range(tasks))
    defaults = f"defaults:\n  retries: {retries}\n" if retries is not None else ""
    path.write_text(f"name: soak\n{defaults}tasks:\n  - id: soak\n    call: soak\n    map: [{items}]\n")


def run_soak(
    seconds: float,
    *,
    seed: int = 7,
    workers: int = 4,
    slots: int = 4,
    task_ms: float = 40.0,
    tasks: int | None = None,
    every: tuple[float, float] = (1.0, 3.0),
    pool: str = "thread",
    retries: int | None = None,
    workdir: str | os.PathLike[str] | None = None,
    progress: IO[str] | None = None,
) -> SoakFigures:
    """Run one soak and return its figures (every process it started is stopped)."""
    task_s = task_ms / 1000.0
    if tasks is None:
        tasks = max(MIN_TASKS, int(seconds * workers * slots / task_s * EFFICIENCY))
    figures = SoakFigures(seed=seed, seconds=seconds, tasks=tasks)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="chaos-soak-", dir=workdir) as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "soaktasks.py").write_text(TASKS_MODULE)
        log = tmp / "executions.log"
        job = tmp / "soak.yaml"
        write_job(job, tasks, log, task_s, retries)
        worker_args = [
            "--services",
            "compute",
            "--pool",
            pool,
            "--concurrency",
            str(slots),
            "--tasks",
            str(tmp / "soaktasks.py"),
            "--heartbeat",
            "1",
        ]
        nameserver, address = start_nameserver()
        chaos = Chaos(address, worker_args, workers, rng, figures)
        submit: subprocess.Popen[str] | None = None
        tail = RawTail(tmp / "soak.results.jsonl")
        started = time.monotonic()
        try:
            chaos.start()
            submit = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pyrocluster",
                    "submit",
                    str(job),
                    "--ns",
                    address,
                    "--json",
                    "--quiet",
                ],
                cwd=tmp,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            started = chaos.started = time.monotonic()
            next_event = started + rng.uniform(*every)
            while submit.poll() is None and time.monotonic() - started < seconds:
                now = time.monotonic()
                chaos.resume_due(now)
                if now >= next_event:
                    chaos.step()
                    next_event = time.monotonic() + rng.uniform(*every)
                    if progress:
                        print(
                            f"  {now - started:5.1f} s  {tail.poll():6d}/{tasks} recorded  "
                            f"{figures.events[-1] if figures.events else ''}",
                            file=progress,
                            flush=True,
                        )
                tail.poll()
                time.sleep(0.05)
            chaos.heal()
            out, err = submit.communicate(timeout=max(120.0, seconds * 2))
            figures.wall_s = time.monotonic() - started
            figures.exit_code = submit.returncode
            tail.poll()
            summary: dict[str, Any] = json.loads(out) if out.strip().startswith("{") else {}
            if not summary and progress:
                print(err, file=progress)
            figures.retried = int(summary.get("retried", 0))
        finally:
            if submit is not None and submit.poll() is None:
                submit.kill()
                submit.communicate()
            tail.close()
            chaos.close()
            nameserver.stop()
        results = tmp / "soak.results.jsonl"
        final = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
        ok_ids = {r["id"] for r in final if r["status"] == "ok"}
        figures.lost = sum(1 for k in range(tasks) if f"soak-{k}" not in ok_ids)
        figures.failed = sum(1 for r in final if r["status"] != "ok")
        figures.duplicated = (
            sum(n - 1 for n in Counter(tail.ids).values()) + len(final) - len({r["id"] for r in final})
        )
        figures.max_attempts = max((int(r.get("attempts", 0)) for r in final), default=0)
        runs = log.read_text().split() if log.exists() else []
        figures.re_executed = max(0, len(runs) - len(set(runs)))
    return figures


def main(argv: list[str] | None = None) -> int:
    """Command line: run a soak, print its figures; exit 1 when a task was lost or duplicated."""
    parser = argparse.ArgumentParser(prog="chaos_soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the chaos schedule [120]")
    parser.add_argument("--seed", type=int, default=7, help="seed of the schedule [7]")
    parser.add_argument("--workers", type=int, default=4, help="workers [4]")
    parser.add_argument("--slots", type=int, default=4, help="--concurrency of each worker [4]")
    parser.add_argument("--task-ms", type=float, default=40.0, help="milliseconds each task sleeps [40]")
    parser.add_argument(
        "--tasks", type=int, default=None, help=f"tasks in the job [enough for --seconds, >= {MIN_TASKS}]"
    )
    parser.add_argument(
        "--every",
        type=float,
        nargs=2,
        default=(1.0, 3.0),
        metavar=("MIN", "MAX"),
        help="seconds between events, drawn uniformly [1 3]",
    )
    parser.add_argument(
        "--pool", choices=("thread", "process"), default="thread", help="workers' pool [thread]"
    )
    parser.add_argument(
        "--retries", type=int, default=None, help="the job's defaults.retries [the default, 3]"
    )
    parser.add_argument("--json", dest="json_out", metavar="PATH", help="also write the figures as JSON here")
    parser.add_argument("--events", action="store_true", help="print the schedule as it happened")
    args = parser.parse_args(argv)
    figures = run_soak(
        args.seconds,
        seed=args.seed,
        workers=args.workers,
        slots=args.slots,
        task_ms=args.task_ms,
        tasks=args.tasks,
        every=tuple(args.every),
        pool=args.pool,
        retries=args.retries,
        progress=sys.stderr,
    )
    if args.events:
        print("\n".join(figures.events))
    print(figures.line())
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(asdict(figures), indent=2) + "\n")
    return 0 if figures.lost == 0 and figures.duplicated == 0 and figures.exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
