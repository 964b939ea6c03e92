"""``pyrocluster cancel JOB``: ask a running job to stop, through its registration."""

from __future__ import annotations

from typing import Any

import click

from pyrocluster import render
from pyrocluster.cli.common import EXIT_OK, command, settings_from, shared_options
from pyrocluster.errors import ConfigError


@click.command()
@click.argument("job", metavar="JOB")
@click.option("--all", "every", is_flag=True, help="Cancel every running job of that name.")
@shared_options
@command
def cancel(job: str, every: bool, **kw: Any) -> int:
    """Cancel the running job JOB (its id as `status` shows it, or its name when one running job
    has it): exit 0 when it acknowledged, 2 when no such job is running or the name is shared
    (the error lists the ids; --all cancels them all), 3 when the cluster is unreachable."""
    from pyrocluster import config
    from pyrocluster.jobs.announce import cancel_job

    settings = settings_from(kw)
    config.apply(settings)
    cancelled = cancel_job(settings, job, every)
    if not cancelled:
        raise ConfigError(f"no running job named {job!r} (see `pyrocluster status` for ids)")
    for job_id in cancelled:
        render.line(f"job {job_id} is cancelling")
    return EXIT_OK
