"""``pyrocluster cancel JOB``: ask a running job to stop, through its registration."""

from __future__ import annotations

from typing import Any

import click

from pyrocluster import render
from pyrocluster.cli.common import EXIT_OK, command, settings_from, shared_options
from pyrocluster.errors import ConfigError


@click.command()
@click.argument("job", metavar="JOB")
@shared_options
@command
def cancel(job: str, **kw: Any) -> int:
    """Cancel the running job JOB (its name as `status` shows it): exit 0 when it acknowledged,
    2 when no such job is running, 3 when the cluster is unreachable."""
    from pyrocluster import config
    from pyrocluster.jobs.announce import cancel_job

    settings = settings_from(kw)
    config.apply(settings)
    if not cancel_job(settings, job):
        raise ConfigError(f"no running job named {job!r} (see `pyrocluster status`)")
    render.line(f"job {job} is cancelling")
    return EXIT_OK
