"""``pyrocluster dashboard``: the live web page, ``/api/status`` and ``/metrics`` (SPEC 8)."""

from __future__ import annotations

import threading
from typing import Any

import click

from pyrocluster import render
from pyrocluster.cli.common import (
    EXIT_OK,
    command,
    listen_options,
    require_secret,
    settings_from,
    shared_options,
    stop_on_signals,
)
from pyrocluster.config import check_bind
from pyrocluster.errors import ConfigError


@click.command()
@listen_options(8265, "Port (0 picks a free one).")
@click.option(
    "--print-token", is_flag=True, help="Print the dashboard token for the cluster secret and exit."
)
@shared_options
@command
def dashboard(host: str, port: int, insecure: bool, print_token: bool, **kw: Any) -> int:
    """Serve the live dashboard, /api/status and /metrics until SIGINT/SIGTERM."""
    from pyrocluster import config
    from pyrocluster.web.auth import dashboard_token

    settings = settings_from(kw)
    require_secret(settings, "run the dashboard")
    if print_token:
        if settings.secret is None:
            raise ConfigError(
                "--print-token: no cluster secret is set (--secret-file or PYROCLUSTER_SECRET); "
                "without one the dashboard takes no token"
            )
        render.line(dashboard_token(settings.secret))
        return EXIT_OK
    try:
        check_bind(host, settings, insecure)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    config.apply(settings)
    from pyrocluster.web.server import serve

    stop = threading.Event()
    stop_on_signals(stop)
    auth = " (token required: pyrocluster dashboard --print-token)" if settings.secret else ""
    serve(settings, host, port, stop, lambda url: render.line(f"pyrocluster dashboard ready at {url}{auth}"))
    return EXIT_OK
