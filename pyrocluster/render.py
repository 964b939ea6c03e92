"""Every rich table, progress display, ready line and error line of the command line."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from rich.console import Console, Group
from rich.table import Table

# Piped output keeps whole rows (no 80-column squeeze) so scripts and logs can read it.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")


def error(message: str) -> None:
    """One ``error:`` line per problem on stderr."""
    for line in str(message).splitlines() or [""]:
        err.print(f"[bold red]error:[/] {line}", markup=True) if err.is_terminal else print(
            f"error: {line}", file=sys.stderr, flush=True
        )


def line(text: str) -> None:
    """A plain line on stdout, flushed at once (ready lines are read by other programs)."""
    print(text, flush=True)


def print_json(data: Any) -> None:
    """One JSON document on stdout."""
    print(json.dumps(data), flush=True)


def _fmt_uptime(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def status_view(status: dict[str, Any]) -> Group:
    """The name server, worker and job tables of ``pyrocluster status``."""
    ns = status["nameserver"]
    ns_table = Table(title="Name server", title_justify="left")
    ns_table.add_column("address")
    ns_table.add_column("reachable")
    ns_table.add_row(ns["address"], "[green]yes[/]" if ns["reachable"] else "[red]no[/]")
    workers = Table(title=f"Workers ({len(status['workers'])})", title_justify="left")
    for col in (
        "name",
        "address",
        "services",
        "tags",
        "state",
        "slots",
        "done",
        "failed",
        "mean ms",
        "uptime",
        "CPU %",
        "memory",
    ):
        workers.add_column(
            col, justify="right" if col in ("slots", "done", "failed", "mean ms", "CPU %") else "left"
        )
    colours = {"ready": "green", "draining": "yellow", "unreachable": "red"}
    for w in status["workers"]:
        workers.add_row(
            w["name"],
            w["address"],
            ",".join(w["services"]),
            ",".join(w["tags"]) or "-",
            f"[{colours.get(w['state'], 'white')}]{w['state']}[/]",
            f"{w['busy']}/{w['slots']}",
            str(w["done"]),
            str(w["failed"]),
            f"{w['mean_ms']:.1f}",
            _fmt_uptime(w["uptime_s"]),
            f"{w['cpu_percent']:.0f}",
            f"{w['rss_mb']:.0f} MB",
        )
    parts: list[Any] = [ns_table, workers]
    if status["jobs"]:
        jobs = Table(title=f"Jobs ({len(status['jobs'])})", title_justify="left")
        for col in ("name", "done/total", "failed", "rate"):
            jobs.add_column(col)
        for j in status["jobs"]:
            jobs.add_row(
                j["name"], f"{j['done']}/{j['total']}", str(j["failed"]), f"{j.get('rate', 0.0):.1f}/s"
            )
        parts.append(jobs)
    if status.get("schedules"):
        parts.append(_schedules_table(status["schedules"]))
    return Group(*parts)


def _schedules_table(schedules: list[dict[str, Any]]) -> Table:
    table = Table(title=f"Schedules ({len(schedules)})", title_justify="left")
    for col in ("name", "next tick", "last tick", "last status", "leader"):
        table.add_column(col)
    colours = {"ok": "green", "failed": "red", "lost": "red", "error": "red", "running": "yellow"}
    for s in schedules:
        status = s.get("last_status") or "-"
        table.add_row(
            s["name"],
            s.get("next_fire") or "-",
            s.get("last_fire") or "-",
            f"[{colours.get(status, 'white')}]{status}[/]",
            s.get("leader") or "[red]none[/]",
        )
    return table


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return _fmt_uptime(seconds) if seconds >= 1 else "<1s"


def job_progress(snap: dict[str, Any]) -> Group:
    """The live view of a running job: a bar, the counters and each worker's share."""
    from rich.progress_bar import ProgressBar

    total = max(snap["total"], 1)
    counts = Table.grid(padding=(0, 2))
    counts.add_row(
        f"[bold]{snap['name']}[/]",
        ProgressBar(total=total, completed=snap["done"], width=40),
        f"{snap['done']}/{snap['total']}",
        f"[green]ok {snap['ok']}[/]",
        f"[red]failed {snap['failed']}[/]",
        f"[yellow]retried {snap['retried']}[/]",
        f"skipped {snap['skipped']}",
        f"queued {snap['queued']}" if snap.get("queued") else "",
        f"in flight {snap['in_flight']}",
        f"{snap['rate']:.0f}/s",
        f"ETA {_eta(snap['eta_s'])}",
    )
    parts: list[Any] = [counts]
    if snap["per_worker"]:
        shares = Table(show_header=True, box=None, padding=(0, 2))
        shares.add_column("worker")
        shares.add_column("ok", justify="right")
        shares.add_column("share", justify="right")
        finished = sum(snap["per_worker"].values()) or 1
        for name, n in sorted(snap["per_worker"].items()):
            shares.add_row(name, str(n), f"{100 * n / finished:.0f}%")
        parts.append(shares)
    return Group(*parts)


def job_summary(summary: dict[str, Any], failures: Sequence[tuple[str, str]] = ()) -> Group:
    """The table printed when ``submit`` ends, and the first failed tasks."""
    table = Table(title=f"Job {summary['name']}", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in ("total", "ok", "failed", "skipped", "retried"):
        table.add_row(key, str(summary[key]))
    table.add_row("wall time", f"{summary['wall_s']:.2f} s")
    table.add_row("tasks/s", f"{summary['tasks_per_s']:.1f}")
    table.add_row("results", summary["output"])
    parts: list[Any] = [table]
    if failures:
        failed = Table(title="Failed tasks", title_justify="left", show_header=False, box=None)
        for task_id, error in failures:
            failed.add_row(f"[red]{task_id}[/]", error)
        if summary["failed"] > len(failures):
            failed.add_row("...", f"{summary['failed'] - len(failures)} more in {summary['output']}")
        parts.append(failed)
    return Group(*parts)


REFRESH_S = 0.25
"""Seconds between progress display refreshes."""


def run_with_progress(run: Callable[[], T], snapshot: Callable[[], dict[str, Any]]) -> T:
    """Run ``run`` in a thread while a live view of ``snapshot()`` refreshes in place."""
    from rich.live import Live

    result: list[T] = []
    worker = threading.Thread(target=lambda: result.append(run()), name="job", daemon=True)
    with Live(job_progress(snapshot()), console=out, refresh_per_second=8) as live:
        worker.start()
        while worker.is_alive():
            worker.join(REFRESH_S)
            live.update(job_progress(snapshot()))
    if not result:
        raise RuntimeError("the job stopped without a summary")
    return result[0]
