"""Every rich table, progress display, ready line and error line of the command line."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console, Group
from rich.table import Table

# Piped output keeps whole rows (no 80-column squeeze) so scripts and logs can read it.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


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
    for col in ("name", "address", "services", "tags", "state", "slots", "done", "failed", "mean ms",
                "uptime", "CPU %", "memory"):
        workers.add_column(col, justify="right" if col in ("slots", "done", "failed", "mean ms", "CPU %") else "left")
    colours = {"ready": "green", "draining": "yellow", "unreachable": "red"}
    for w in status["workers"]:
        workers.add_row(
            w["name"], w["address"], ",".join(w["services"]), ",".join(w["tags"]) or "-",
            f"[{colours.get(w['state'], 'white')}]{w['state']}[/]", f"{w['busy']}/{w['slots']}",
            str(w["done"]), str(w["failed"]), f"{w['mean_ms']:.1f}", _fmt_uptime(w["uptime_s"]),
            f"{w['cpu_percent']:.0f}", f"{w['rss_mb']:.0f} MB",
        )
    parts: list[Any] = [ns_table, workers]
    if status["jobs"]:
        jobs = Table(title=f"Jobs ({len(status['jobs'])})", title_justify="left")
        for col in ("name", "done/total", "failed", "rate"):
            jobs.add_column(col)
        for j in status["jobs"]:
            jobs.add_row(j["name"], f"{j['done']}/{j['total']}", str(j["failed"]), f"{j.get('rate', 0.0):.1f}/s")
        parts.append(jobs)
    return Group(*parts)
