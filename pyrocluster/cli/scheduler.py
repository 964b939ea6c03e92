"""``pyrocluster scheduler``: run the jobs of a schedules file on their ticks until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import threading
from typing import Any

import click

from pyrocluster import render
from pyrocluster.cli.common import (
    EXIT_OK,
    command,
    health_options,
    require_secret,
    settings_from,
    shared_options,
    stop_on_signals,
    supervision,
)
from pyrocluster.defaults import DEFAULT_DRAIN_TIMEOUT_S, DEFAULT_SCHEDULER_STATE, DEFAULT_SUBMIT_WAIT_S


@click.command()
@click.argument("schedules_file", metavar="SCHEDULES.yaml")
@click.option(
    "--name", default="", help="Scheduler name shown in status and ticks.jsonl [default: <hostname>-<pid>]."
)
@click.option(
    "--state",
    "state_path",
    default=DEFAULT_SCHEDULER_STATE,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Local copy of each schedule's newest decided tick (for a name server that forgot it).",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(0, 86400),
    default=DEFAULT_DRAIN_TIMEOUT_S,
    show_default=True,
    help="Seconds running ticks have to finish when stopping; then they are cancelled.",
)
@click.option(
    "--wait",
    type=click.FloatRange(0, 3600),
    default=DEFAULT_SUBMIT_WAIT_S,
    show_default=True,
    metavar="SECONDS",
    help="How long each tick waits for a worker offering each needed service or tag.",
)
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --health-host without a cluster secret.")
@health_options
@shared_options
@command
def scheduler(
    schedules_file: str,
    name: str,
    state_path: str,
    drain_timeout: float,
    wait: float,
    insecure: bool,
    **kw: Any,
) -> int:
    """Run jobs on a schedule (cron or every); several schedulers on one file fire each tick once."""
    from pyrocluster import config
    from pyrocluster.scheduler.spec import load_schedules
    from pyrocluster.scheduler.state import SchedulerOptions

    settings = settings_from(kw)
    require_secret(settings, "run a scheduler")
    if not settings.debug:  # our own INFO lines: leading or standing by, each tick's decision and end
        logging.getLogger("pyrocluster.scheduler").setLevel(logging.INFO)
    schedules = load_schedules(schedules_file)  # exit 2 before anything starts
    from pyrocluster.scheduler.service import Scheduler  # the coordinator: after the file is valid

    config.apply(settings)
    options = SchedulerOptions(
        schedules_file=schedules_file,
        name=name,
        state_path=state_path,
        drain_timeout_s=drain_timeout,
        wait_s=wait,
    )
    service = Scheduler(settings, schedules, options)
    stop = threading.Event()
    stop_on_signals(stop)
    sup = supervision(kw, settings, insecure, service.liveness, service.readiness)
    service.start()
    sup.start()
    health = f", health at {sup.health_address}" if sup.health_address else ""
    render.line(
        f"pyrocluster scheduler {service.name} ready: {len(schedules)} schedule(s) from {schedules_file}, "
        f"name server {settings.ns_address}{health}"
    )
    sup.ready()
    sup.stopping_when(stop)
    service.serve(stop)
    sup.close()
    render.line(f"pyrocluster scheduler {service.name} stopped")
    return EXIT_OK
