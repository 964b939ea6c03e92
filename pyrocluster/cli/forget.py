"""``pyrocluster forget WORKER``: remove a dead worker's registrations from the name server."""

from __future__ import annotations

from typing import Any

import click

from pyrocluster import render
from pyrocluster.cli.common import EXIT_OK, command, settings_from, shared_options
from pyrocluster.errors import ConfigError


@click.command()
@click.argument("worker", metavar="WORKER")
@shared_options
@command
def forget(worker: str, **kw: Any) -> int:
    """Forget the registered worker WORKER, which no longer answers (killed without unregistering).

    The name server does the same by itself after `--forget-after`. A worker that still answers is
    refused (exit 2): stop it with SIGTERM, which drains it first.
    """
    from pyrocluster import config
    from pyrocluster.coordinator.fanout import call_each
    from pyrocluster.nameserver import registry

    settings = settings_from(kw)
    config.apply(settings)
    ns = registry.connect(settings)
    try:
        entries = [e for e in registry.find_workers(ns) if e.name == worker]
        if not entries:
            raise ConfigError(f"no registered worker named {worker!r} (see `pyrocluster status`)")
        ((_, silent),) = call_each(settings, [(entries[0].uris[registry.CONTROL], "ping")], 2.0)
        if silent is None:
            raise ConfigError(f"worker {worker!r} answers: stop it with SIGTERM (it drains first) instead")
        registry.unregister_worker(ns, worker)
    finally:
        ns._pyroRelease()
    render.line(f"forgot worker {worker}")
    return EXIT_OK
