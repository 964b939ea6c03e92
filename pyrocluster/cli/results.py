"""``pyrocluster results FILE``: a results file's summary and its failed tasks, with tracebacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pyrocluster import render
from pyrocluster.cli.common import EXIT_OK, command, settings_from, shared_options


@click.command()
@click.argument("results_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--failed", "show_failed", is_flag=True, help="Every failed task with its traceback.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@shared_options
@command
def results(results_file: str, show_failed: bool, as_json: bool, **kw: Any) -> int:
    """Summarise a results file: counts, workers, and why tasks failed (exit 0 whatever they did)."""
    from pyrocluster.jobs.summary import summarise

    settings_from(kw)
    summary = summarise(Path(results_file))
    if as_json:
        render.print_json(summary.as_json(with_failures=show_failed))
    else:
        render.out.print(render.results_view(summary.as_json(with_failures=True), show_failed))
    return EXIT_OK
