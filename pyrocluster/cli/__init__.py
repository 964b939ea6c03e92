"""The ``pyrocluster`` command group; each command lives in a module of this package.

A command's module is imported only when that command runs (or help lists it): every command
pays for the libraries it uses, not for the others' (``import pyrocluster.cli`` stays light).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from pyrocluster import __version__

COMMANDS = {
    "nameserver": "core",
    "worker": "core",
    "submit": "core",
    "status": "core",
    "cancel": "cancel",
    "forget": "forget",
    "dashboard": "dashboard",
    "results": "results",
    "scheduler": "scheduler",
    "tls": "certs",
    "drain": "operate",
    "undrain": "operate",
    "schedule": "operate",
    "token": "tokens",
}
"""Each command's name and the module of this package that defines it (under the same name)."""

NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())
"""What click 8.2+ raises for a group run without a command."""


class Group(click.Group):
    """A click group whose usage errors end in one ``error:`` line, as every other error does,
    and whose commands are imported on first use (``COMMANDS``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command, those added directly and those imported on use."""
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command of that name, importing its module the first time."""
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module = importlib.import_module(f"pyrocluster.cli.{COMMANDS[cmd_name]}")
            self.add_command(getattr(module, cmd_name))
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run the command line; usage errors print the usage, a hint and ``error: ...``, exit 2."""
        from pyrocluster import render
        from pyrocluster.cli.common import EXIT_INTERRUPTED, EXIT_USAGE

        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.UsageError as exc:
            if isinstance(exc, NO_ARGS_IS_HELP) and exc.ctx is not None:
                click.echo(exc.ctx.get_help())  # a bare `pyrocluster` is asking what there is
                sys.exit(0)
            if exc.ctx is not None:
                click.echo(exc.ctx.get_usage(), err=True)
                click.echo(f"Try '{exc.ctx.command_path} -h' for help.\n", err=True)
            render.error(exc.format_message())
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            render.error(exc.format_message())
            sys.exit(exc.exit_code)
        except click.Abort:
            render.error("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code or 0)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pyrocluster")
@click.option(
    "--debug",
    is_flag=True,
    envvar="PYROCLUSTER_DEBUG",
    show_envvar=True,
    help="Verbose logs and tracebacks (for every subcommand; each also takes --debug).",
)
def main(debug: bool) -> None:
    """A light Python compute and crawl cluster on Pyro5."""
    if debug:
        os.environ["PYROCLUSTER_DEBUG"] = "1"  # the subcommand's own --debug reads it
