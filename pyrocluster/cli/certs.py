"""``pyrocluster tls init DIR`` and ``tls issue DIR NAME``: the certificates ``--tls-*`` takes."""

from __future__ import annotations

from pathlib import Path

import click

from pyrocluster import render
from pyrocluster.cli.common import EXIT_OK, command, debug_option


@click.group()
def tls() -> None:
    """Make the cluster's CA and the certificates of its hosts (for --tls-cert/--tls-key/--tls-ca)."""


@tls.command()
@click.argument("directory", metavar="DIR")
@click.option("--name", default="pyrocluster CA", show_default=True, help="The CA's common name.")
@click.option("--days", type=click.IntRange(1, 36500), default=3650, show_default=True, help="Validity.")
@debug_option
@command
def init(directory: str, name: str, days: int, debug: bool) -> int:
    """Make a cluster CA in DIR: ca.crt (give it to every host) and ca.key (mode 0600, keep it safe)."""
    from pyrocluster.pki import init_directory

    ca = init_directory(Path(directory), name, days)
    render.line(f"CA written: {ca} and {ca.with_suffix('.key')} (mode 0600)")
    return EXIT_OK


@tls.command()
@click.argument("directory", metavar="DIR")
@click.argument("name", metavar="NAME")
@click.option(
    "--host", "hosts", multiple=True, metavar="H", help="DNS name the certificate names (repeatable)."
)
@click.option(
    "--ip", "ips", multiple=True, metavar="IP", help="IP address the certificate names (repeatable)."
)
@click.option("--days", type=click.IntRange(1, 36500), default=365, show_default=True, help="Validity.")
@debug_option
@command
def issue(
    directory: str, name: str, hosts: tuple[str, ...], ips: tuple[str, ...], days: int, debug: bool
) -> int:
    """Write NAME.crt and NAME.key (mode 0600) signed by the CA in DIR, for a server and client alike.

    Without --host or --ip the certificate names NAME as its DNS name.
    """
    from pyrocluster.pki import issue_in_directory

    crt, key = issue_in_directory(Path(directory), name, hosts or ((name,) if not ips else ()), ips, days)
    render.line(f"certificate written: {crt} and {key} (mode 0600)")
    return EXIT_OK
