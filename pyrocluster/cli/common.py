"""What every command shares: the section-2 options, settings, exit codes and error mapping."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import click

from pyrocluster import render
from pyrocluster.config import Settings
from pyrocluster.errors import (
    ClusterUnreachable,
    ConfigError,
    JobFileError,
    PyroClusterError,
    ResultsUnwritable,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_RESULTS_UNWRITABLE = 74
"""The results file could not be written (disk full, permissions): sysexits' EX_IOERR."""


def shared_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Attach the settings every command takes (section 2 of the spec)."""
    options = [
        click.option(
            "--ns",
            envvar="PYROCLUSTER_NS",
            show_envvar=True,
            metavar="HOST:PORT",
            help="Name server address [default: 127.0.0.1:9090].",
        ),
        click.option(
            "--secret-file",
            envvar="PYROCLUSTER_SECRET_FILE",
            show_envvar=True,
            type=click.Path(dir_okay=False),
            help="File holding the cluster secret (or set PYROCLUSTER_SECRET).",
        ),
        click.option(
            "--tls-cert", envvar="PYROCLUSTER_TLS_CERT", show_envvar=True, help="TLS certificate (PEM)."
        ),
        click.option(
            "--tls-key", envvar="PYROCLUSTER_TLS_KEY", show_envvar=True, help="TLS private key (PEM)."
        ),
        click.option(
            "--tls-ca", envvar="PYROCLUSTER_TLS_CA", show_envvar=True, help="CA that signs every peer (PEM)."
        ),
        click.option(
            "--serializer",
            envvar="PYROCLUSTER_SERIALIZER",
            show_envvar=True,
            type=click.Choice(["msgpack", "serpent"]),
            help="Wire serializer [default: msgpack].",
        ),
        click.option(
            "--debug",
            is_flag=True,
            envvar="PYROCLUSTER_DEBUG",
            show_envvar=True,
            help="Verbose logs and tracebacks.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def listen_options(default_port: int | None, port_help: str) -> Callable[[Callable[..., Any]], Any]:
    """``--host``, ``--port`` and ``--insecure`` of a command that listens (name server, dashboard)."""

    def attach(func: Callable[..., Any]) -> Any:
        options = [
            click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on."),
            click.option(
                "--port",
                default=default_port,
                show_default=default_port is not None,
                type=click.IntRange(0, 65535),
                help=port_help,
            ),
            click.option(
                "--insecure", is_flag=True, help="Allow a non-loopback address without a cluster secret."
            ),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return attach


def settings_from(kw: dict[str, Any], info_logs: bool = False) -> Settings:
    """Settings from the shared options (removed from ``kw``); also sets up logging (INFO if asked)."""
    from pyrocluster import logs

    try:
        settings = Settings.from_sources(
            ns=kw.pop("ns"),
            secret_file=kw.pop("secret_file"),
            tls_cert=kw.pop("tls_cert"),
            tls_key=kw.pop("tls_key"),
            tls_ca=kw.pop("tls_ca"),
            serializer=kw.pop("serializer"),
            debug=kw.pop("debug") or None,
        )
    except OSError as exc:
        raise ConfigError(f"--secret-file: {exc.strerror}: {exc.filename}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    logs.configure(settings.debug, info=info_logs)
    return settings


def command(func: Callable[..., int | None]) -> Callable[..., None]:
    """Run a command body: map our errors to one ``error:`` line and the documented exit code."""

    @functools.wraps(func)
    def wrapper(**kw: Any) -> None:
        debug = bool(kw.get("debug"))
        try:
            code = func(**kw) or EXIT_OK
        except KeyboardInterrupt:
            render.error("interrupted")
            code = EXIT_INTERRUPTED
        except (ConfigError, JobFileError) as exc:
            render.error(str(exc))
            code = EXIT_USAGE
        except ClusterUnreachable as exc:
            render.error(str(exc))
            code = EXIT_UNREACHABLE
        except ResultsUnwritable as exc:
            render.error(str(exc))
            code = EXIT_RESULTS_UNWRITABLE
        except PyroClusterError as exc:
            render.error(str(exc))
            code = EXIT_FAILED
        except Exception as exc:  # the last line of defence: one line, never a bare traceback
            if debug:
                traceback.print_exc()
            render.error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
            code = EXIT_FAILED
        sys.exit(code)

    return wrapper


def stop_on_signals(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set ``stop``; so does the end of a ``--local`` parent that started us."""
    from pyrocluster.local import stop_when_parent_dies

    stop_when_parent_dies(stop)

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def cancel_on_signals(stop: threading.Event) -> None:
    """For ``submit``: the first SIGINT/SIGTERM cancels the job (``stop``) and says so; a second
    one leaves at once with exit 130 (every line already written stays valid)."""
    from pyrocluster.local import stop_when_parent_dies

    stop_when_parent_dies(stop)

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            os._exit(EXIT_INTERRUPTED)
        stop.set()
        render.notice("cancelling the job: stopping its running tasks (press Ctrl-C again to leave at once)")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
