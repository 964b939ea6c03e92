"""``pyrocluster drain|undrain WORKER`` and ``pyrocluster schedule pause|resume NAME`` (operators)."""

from __future__ import annotations

from typing import Any

import click

from pyrocluster import render
from pyrocluster.cli.common import EXIT_OK, command, settings_from, shared_options
from pyrocluster.errors import ConfigError


def _drain(worker: str, draining: bool, kw: dict[str, Any]) -> int:
    from pyrocluster import config, operate

    settings = settings_from(kw)
    config.apply(settings)
    try:
        changed = operate.set_draining(settings, worker, draining)
    except LookupError as exc:
        raise ConfigError(str(exc.args[0])) from None
    state = "draining (takes no new work)" if draining else "ready"
    render.line(f"worker {worker} is {state}" + ("" if changed else " (it already was)"))
    return EXIT_OK


@click.command()
@click.argument("worker", metavar="WORKER")
@shared_options
@command
def drain(worker: str, **kw: Any) -> int:
    """Stop WORKER taking new work; it stays up and finishes what it runs (operator)."""
    return _drain(worker, True, kw)


@click.command()
@click.argument("worker", metavar="WORKER")
@shared_options
@command
def undrain(worker: str, **kw: Any) -> int:
    """Let a drained WORKER take work again (operator)."""
    return _drain(worker, False, kw)


def _pause(name: str, paused: bool, kw: dict[str, Any]) -> int:
    from pyrocluster import config, operate

    settings = settings_from(kw)
    config.apply(settings)
    try:
        changed = operate.set_paused(settings, name, paused)
    except LookupError as exc:
        raise ConfigError(str(exc.args[0])) from None
    state = "paused" if paused else "resumed"
    render.line(f"schedule {name} {state}" + ("" if changed else " (it already was)"))
    return EXIT_OK


@click.group()
def schedule() -> None:
    """Pause or resume a schedule cluster-wide (operator)."""


@schedule.command()
@click.argument("name", metavar="NAME")
@shared_options
@command
def pause(name: str, **kw: Any) -> int:
    """Fire no tick of schedule NAME until it is resumed."""
    return _pause(name, True, kw)


@schedule.command()
@click.argument("name", metavar="NAME")
@shared_options
@command
def resume(name: str, **kw: Any) -> int:
    """Fire schedule NAME again (ticks missed while paused follow its misfire rule)."""
    return _pause(name, False, kw)
