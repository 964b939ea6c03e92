"""The ``pyrocluster`` command group; each command lives in a module of this package."""

from __future__ import annotations

import click

from pyrocluster import __version__
from pyrocluster.cli import cancel, core, dashboard, scheduler


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pyrocluster")
def main() -> None:
    """A light Python compute and crawl cluster on Pyro5."""


for command in (
    core.nameserver,
    core.worker,
    core.submit,
    core.status,
    cancel.cancel,
    dashboard.dashboard,
    scheduler.scheduler,
):
    main.add_command(command)
