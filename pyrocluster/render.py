"""Every rich table, progress display, ready line and error line of the command line."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from pyrocluster import logs
from pyrocluster.listed_jobs import DEFAULT_LIMIT, ended_text, list_jobs, runs_text
from pyrocluster.resources import show

if TYPE_CHECKING:
    from rich.console import Console, Group
    from rich.table import Table

    out: Console
    err: Console

T = TypeVar("T")


@cache
def _console(stderr: bool) -> Console:
    """The rich console of stdout or stderr, made (and rich imported) on first use: the daemons
    and the plain-line paths never load rich."""
    from rich.console import Console

    if stderr:
        return Console(stderr=True, highlight=False, soft_wrap=True)
    # Piped output keeps whole rows (no 80-column squeeze) so scripts and logs can read it.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def __getattr__(name: str) -> Any:
    """``render.out`` and ``render.err``: the consoles of stdout and stderr."""
    if name in ("out", "err"):
        return _console(name == "err")
    raise AttributeError(name)


def error(message: str) -> None:
    """One ``error:`` line per problem on stderr (a JSON record each with ``--log-format json``)."""
    for line in str(message).splitlines() or [""]:
        if logs.is_json():
            logs.error_line(line)
            continue
        console = _console(True)
        console.print(f"[bold red]error:[/] {line}", markup=True) if console.is_terminal else print(
            f"error: {line}", file=sys.stderr, flush=True
        )


def notice(message: str) -> None:
    """A line on stderr that reports what is happening (not an error; a record with ``--log-format json``)."""
    if logs.is_json():
        logs.notice_line(message)
        return
    print(message, file=sys.stderr, flush=True)


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


NARROW_WIDTH = 120
"""Below this many columns the tables and the progress display take their narrow layout."""
_STATE_COLOURS = {
    "ready": "green",
    "draining": "yellow",
    "unreachable": "red",
    "incompatible": "magenta",
    "running": "yellow",
    "finished": "green",
    "cancelled": "red",
    "lost": "red",
}


def _width(width: int | None) -> int:
    return width if width is not None else _console(False).width


def _table(title: str, narrow: bool, columns: Sequence[tuple[str, bool]]) -> Table:
    """A table whose cells fold instead of truncating; ``(name, right_aligned)`` per column."""
    from rich import box
    from rich.table import Table

    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD,
        padding=(0, 1),
        pad_edge=not narrow,
        collapse_padding=narrow,
    )
    for name, right in columns:
        table.add_column(name, justify="right" if right else "left", overflow="fold")
    return table


def _keep_whole(table: Table, rows: Sequence[Sequence[str]], columns: Sequence[int]) -> None:
    """Never wrap or cut the given columns (names, addresses, states, numbers): the lists give way."""
    from rich.text import Text

    for index in columns:
        longest = max(
            [len(str(table.columns[index].header))] + [len(Text.from_markup(r[index])) for r in rows]
        )
        table.columns[index].no_wrap = True
        table.columns[index].min_width = longest


def _state(state: str) -> str:
    return f"[{_STATE_COLOURS.get(state, 'white')}]{state}[/]"


def resources_text(resources: dict[str, Any] | None) -> str:
    """``cpu 1/2, memory 0/16GiB, licence 1/2``: used/total of each resource of a worker."""
    if not resources:
        return "-"
    return ", ".join(
        f"{name} {show(name, float(held.get('used', 0)))}/{show(name, float(held.get('total', 0)))}"
        for name, held in sorted(resources.items())
    )


def _worker_row(w: dict[str, Any]) -> dict[str, str]:
    row = {
        "name": w["name"],
        "address": w["address"],
        "services": ", ".join(w["services"]),
        "tags": ", ".join(w["tags"]) or "-",
        "state": _state(w["state"]) + (f" v{w.get('protocol', 0)}" if w["state"] == "incompatible" else ""),
        "slots": f"{w['busy']}/{w['slots']}",
        "done": str(w["done"]),
        "failed": str(w["failed"]),
        "mean ms": f"{w['mean_ms']:.1f}",
        "uptime": _fmt_uptime(w["uptime_s"]),
        "CPU %": f"{w['cpu_percent']:.0f}",
        "memory": f"{w['rss_mb']:.0f} MB",
        "tasks": str(len(w.get("tasks") or [])),
        "resources": resources_text(w.get("resources")),
    }
    if w["state"] == "unreachable":  # it did not answer: its numbers are unknown, not zero
        unknown = ("done", "failed", "mean ms", "uptime", "CPU %", "memory", "tasks", "resources")
        row.update({key: "-" for key in unknown}, slots=f"-/{w['slots']}")
    return row


def _worker_rows(status: dict[str, Any]) -> list[dict[str, str]]:
    return [_worker_row(w) for w in status["workers"]]


_RIGHT = {
    "slots", "done", "failed", "mean ms", "CPU %", "memory", "tasks", "uptime", "rate", "done/total",
    "priority", "cancelled", "waiting",
}  # fmt: skip
_WIDE_WORKER_COLUMNS = (
    "name", "address", "services", "tags", "state", "slots", "tasks", "done", "failed", "mean ms", "uptime",
    "CPU %", "memory", "resources",
)  # fmt: skip
_NARROW_WORKER_TABLES = (
    ("name", "address", "state", "slots", "done", "failed"),
    ("name", "services", "tags", "tasks", "mean ms", "CPU %", "memory", "uptime"),
    ("name", "resources"),
)
"""Below ``NARROW_WIDTH`` the worker table is two tables, each short enough for 80 columns."""


def _rows_table(title: str, narrow: bool, columns: Sequence[str], rows: list[dict[str, str]]) -> Table:
    table = _table(title, narrow, [(c, c in _RIGHT) for c in columns])
    cells = [[row[c] for c in columns] for row in rows]
    for row in cells:
        table.add_row(*row)
    _keep_whole(
        table, cells, [i for i, c in enumerate(columns) if c not in ("services", "tags", "resources")]
    )
    return table


def _job_row(j: dict[str, Any]) -> dict[str, str]:
    # A lost job answers nothing: its counts are the ones it last published, if any (else "-").
    lost = j.get("state") == "lost"
    known = not lost or bool(j.get("total"))

    def count(key: str) -> str:
        return str(j.get(key, 0)) if known and (key in j or not lost) else "-"

    return {
        "job": str(j.get("id") or j["name"]),
        "state": _state(j.get("state", "running")),
        "priority": str(j.get("priority", 0)),
        "done/total": f"{j['done']}/{j['total']}" if known else "-",
        "failed": count("failed"),
        "cancelled": count("cancelled"),
        "waiting": count("waiting"),
        "rate": f"{j.get('rate', 0.0):.1f}/s" if not lost else "-",
        "ended": ended_text(j),
        "runs": runs_text(j),
    }


def _jobs_table(jobs: list[dict[str, Any]], narrow: bool) -> Table:
    more = jobs[-1].get("more") if "more" in jobs[-1] else None
    rows = [_job_row(j) for j in (jobs[:-1] if more else jobs)]
    columns = ["job", "state", "done/total", "failed", "ended"]
    if not narrow:
        optional = [c for c in ("cancelled", "waiting", "runs") if any(r[c] not in ("0", "-") for r in rows)]
        columns[2:2] = ["priority"]
        columns[-1:-1] = [*optional, "rate"]
    title = f"Jobs ({len(rows)})" + (f", {more} more finished: --limit 0" if more else "")
    return _rows_table(title, narrow, columns, rows)


def status_view(
    status: dict[str, Any], width: int | None = None, jobs: str = "recent", limit: int = DEFAULT_LIMIT
) -> Group:
    """The name server, worker, job and schedule tables of ``pyrocluster status``; ``jobs`` and
    ``limit`` choose the jobs listed (:func:`pyrocluster.listed_jobs.list_jobs`)."""
    from rich.console import Group
    from rich.markup import escape

    narrow = _width(width) < NARROW_WIDTH
    ns = status["nameserver"]
    error = ns.get("error")  # it could not be read: not reachable, or it refused us
    columns = [("address", False), ("reachable", False)] + ([("error", False)] if error else [])
    ns_table = _table("Name server", narrow, columns)
    reachable = "[green]yes[/]" if ns["reachable"] else "[red]no[/]"
    ns_table.add_row(ns["address"], reachable, *([f"[red]{escape(str(error))}[/]"] if error else []))
    rows = _worker_rows(status)
    title = f"Workers ({len(rows)})"
    parts: list[Any] = [ns_table]
    if narrow:
        parts.append(_rows_table(title, narrow, _NARROW_WORKER_TABLES[0], rows))
        if rows:
            parts.append(_rows_table("Worker resources", narrow, _NARROW_WORKER_TABLES[1], rows))
            parts.append(_rows_table("Resources (used/total)", narrow, _NARROW_WORKER_TABLES[2], rows))
    else:
        parts.append(_rows_table(title, narrow, _WIDE_WORKER_COLUMNS, rows))
    rows_of_jobs = list_jobs(status["jobs"], jobs, limit)
    if rows_of_jobs:
        parts.append(_jobs_table(rows_of_jobs, narrow))
    if status.get("schedules"):
        schedules = [
            {
                "name": s["name"],
                "next": str(s.get("next_fire") or "-") + _in_zone(s),
                "last": str(s.get("last_fire") or "-"),
                "status": str(s.get("last_status") or "-"),
                "leader": str(s.get("leader") or "-"),
            }
            for s in status["schedules"]
        ]
        parts.append(_rows_table(f"Schedules ({len(schedules)})", narrow, list(schedules[0]), schedules))
    return Group(*parts)


def _in_zone(schedule: dict[str, Any]) -> str:
    """`` (03:00 Europe/Berlin)``: a zoned cron's next tick on its own wall clock, or ''."""
    local, zone = schedule.get("next_fire_local"), schedule.get("timezone")
    return f" ({str(local)[11:16]} {zone})" if local and zone else ""


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return _fmt_uptime(seconds) if seconds >= 1 else "<1s"


def job_progress(snap: dict[str, Any], width: int | None = None) -> Group:
    """The live view of a running job: a bar, the counters and each worker's share.

    Wide: one line. Narrow (below ``NARROW_WIDTH``): the bar line, then the counters line.
    """
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    narrow = _width(width) < NARROW_WIDTH
    total = max(snap["total"], 1)
    head = [
        f"[bold]{snap['name']}[/]",
        f"{snap['done']}/{snap['total']}",
        f"{snap['rate']:.0f}/s",
        f"ETA {_eta(snap['eta_s'])}",
    ]
    counters = [
        f"[green]ok {snap['ok']}[/]",
        f"[red]failed {snap['failed']}[/]",
        f"[yellow]retried {snap['retried']}[/]",
        f"skipped {snap['skipped']}",
        *([f"[red]cancelled {snap['cancelled']}[/]"] if snap.get("cancelled") else []),
        *([f"queued {snap['queued']}"] if snap.get("queued") else []),
        *([f"waiting {snap['waiting']}"] if snap.get("waiting") else []),
        f"in flight {snap['in_flight']}",
    ]
    bar = ProgressBar(total=total, completed=snap["done"], width=None if narrow else 40)
    line = Table.grid(padding=(0, 2), expand=narrow)
    cells: list[Any] = [head[0], bar, *head[1:]] if narrow else [head[0], bar, head[1], *counters, *head[2:]]
    for i, _cell in enumerate(cells):
        line.add_column(no_wrap=True, ratio=1 if (narrow and i == 1) else None)
    line.add_row(*cells)
    parts: list[Any] = [line]
    if narrow:
        parts.append(Text.from_markup("  ".join(counters), overflow="fold"))
    if snap["per_worker"]:
        shares = Table(show_header=True, box=None, padding=(0, 2))
        shares.add_column("worker", no_wrap=True)
        shares.add_column("ok", justify="right")
        shares.add_column("share", justify="right")
        finished = sum(snap["per_worker"].values()) or 1
        for name, n in sorted(snap["per_worker"].items()):
            shares.add_row(name, str(n), f"{100 * n / finished:.0f}%")
        parts.append(shares)
    return Group(*parts)


def job_summary(
    summary: dict[str, Any], failures: Sequence[tuple[str, str]] = (), table_too: bool = True
) -> Group:
    """The table printed when ``submit`` ends (unless not ``table_too``), and the first failed tasks."""
    from rich.console import Group
    from rich.table import Table

    table = Table(title=f"Job {summary['name']}", title_justify="left", show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", justify="right", overflow="fold")
    for key in ("total", "ok", "failed", "skipped", "cancelled", "retried"):
        table.add_row(key, str(summary.get(key, 0)))
    table.add_row("wall time", f"{summary['wall_s']:.2f} s")
    table.add_row("tasks/s", f"{summary['tasks_per_s']:.1f}")
    table.add_row("results", summary["output"])
    parts: list[Any] = [table] if table_too else []
    if failures:
        failed = Table(title="Failed tasks", title_justify="left", show_header=False, box=None)
        failed.add_column("id", overflow="fold")
        failed.add_column("error", overflow="fold")
        for task_id, error in failures:
            failed.add_row(f"[red]{task_id}[/]", error)
        more = summary["failed"] - len(failures)
        if more > 0:
            failed.add_row("...", f"{more} more: pyrocluster results {summary['output']} --failed")
        parts.append(failed)
    return Group(*parts)


SHOWN_RESULT_FAILURES = 20
"""Failed tasks ``results`` lists (one line each) without ``--failed``."""


def results_view(data: dict[str, Any], show_failed: bool) -> Group:
    """``pyrocluster results``: the summary table, then the failures (with tracebacks if asked)."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    title = f"Results {data['file']}" + (f" (job {data['job']})" if data.get("job") else "")
    # The title is a line of its own: as a table title it would wrap at the narrow table's width.
    table = Table(show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", justify="right", overflow="fold")
    run = {None: "unknown (no run file)", True: "yes", False: "[red]no[/] (finish it with submit --resume)"}
    for key in ("total", "ok", "failed", "skipped", "cancelled", "retried"):
        table.add_row(key, str(data[key]))
    table.add_row("mean ms", f"{data['mean_ms']:.1f}")
    table.add_row("run finished", run[data.get("finished")])
    for worker, n in sorted(data["workers"].items()):
        table.add_row(f"ok on {worker}", str(n))
    parts: list[Any] = [Text(title, style="italic"), table]
    failures = data.get("failures") or []
    if failures and show_failed:
        for record in failures:
            err = record.get("error") or {}
            where = f"{record.get('call') or record.get('url', '')} on {record.get('worker') or '?'}"
            body = Text(f"{err.get('type')}: {err.get('message')}\n", style="bold red")
            body.append(str(err.get("traceback") or "(no traceback)").rstrip())
            title = f"{record['id']} ({where}, {record.get('attempts', 1)} attempt(s))"
            parts.append(Panel(body, title=title, title_align="left", border_style="red"))
    elif failures:
        listed = Table(title="Failed tasks", title_justify="left", show_header=False, box=None)
        listed.add_column("id", overflow="fold")
        listed.add_column("error", overflow="fold")
        for record in failures[:SHOWN_RESULT_FAILURES]:
            err = record.get("error") or {}
            listed.add_row(f"[red]{record['id']}[/]", f"{err.get('type')}: {err.get('message')}")
        more = len(failures) - SHOWN_RESULT_FAILURES
        hint = "--failed shows every failed task with its traceback"
        listed.add_row("", f"{more} more; {hint}" if more > 0 else hint)
        parts.append(listed)
    return Group(*parts)


REFRESH_S = 0.25
"""Seconds between progress display refreshes."""


def run_with_progress(run: Callable[[], T], snapshot: Callable[[], dict[str, Any]]) -> T:
    """Run ``run`` in a thread while a live view of ``snapshot()`` refreshes in place."""
    from rich.live import Live

    result: list[T] = []
    worker = threading.Thread(target=lambda: result.append(run()), name="job", daemon=True)
    with Live(job_progress(snapshot()), console=_console(False), refresh_per_second=8) as live:
        worker.start()
        while worker.is_alive():
            worker.join(REFRESH_S)
            live.update(job_progress(snapshot()))
    if not result:
        raise RuntimeError("the job stopped without a summary")
    return result[0]
