"""What every command shares: the section-2 options, settings, exit codes and error mapping."""

from __future__ import annotations

import contextvars
import functools
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from pyrocluster import render
from pyrocluster.config import Settings, check_value_cap, parse_size
from pyrocluster.errors import (
    ClusterUnreachable,
    ConfigError,
    JobFileError,
    PyroClusterError,
    ResultsUnwritable,
    RoleRefused,
)

if TYPE_CHECKING:
    from pyrocluster.ops.supervise import Supervision

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_RESULTS_UNWRITABLE = 74
"""The results file could not be written (disk full, permissions): sysexits' EX_IOERR."""
EXIT_NOPERM = 77
"""The credential's role does not allow the action: sysexits' EX_NOPERM."""


SHARED_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("--ns",),
        {
            "envvar": "PYROCLUSTER_NS",
            "metavar": "HOST:PORT",
            "help": "Name server address [default: 127.0.0.1:9090].",
        },
    ),
    (
        ("--secret-file",),
        {
            "envvar": "PYROCLUSTER_SECRET_FILE",
            "type": click.Path(dir_okay=False),
            "help": "File holding the cluster secret (or set PYROCLUSTER_SECRET).",
        },
    ),
    (
        ("--token-file",),
        {
            "envvar": "PYROCLUSTER_TOKEN_FILE",
            "type": click.Path(dir_okay=False),
            "help": "File holding a role token, used in place of the secret (or set PYROCLUSTER_TOKEN).",
        },
    ),
    (("--tls-cert",), {"envvar": "PYROCLUSTER_TLS_CERT", "help": "TLS certificate (PEM)."}),
    (("--tls-key",), {"envvar": "PYROCLUSTER_TLS_KEY", "help": "TLS private key (PEM)."}),
    (("--tls-ca",), {"envvar": "PYROCLUSTER_TLS_CA", "help": "CA that signs every peer (PEM)."}),
    (
        ("--serializer",),
        {
            "envvar": "PYROCLUSTER_SERIALIZER",
            "type": click.Choice(["msgpack", "serpent"]),
            "help": "Wire serializer [default: msgpack].",
        },
    ),
    (
        ("--log-format",),
        {
            "envvar": "PYROCLUSTER_LOG_FORMAT",
            "type": click.Choice(["text", "json"]),
            "default": "text",
            "help": "Log lines on stderr: text, or one JSON object per line.",
        },
    ),
    (
        ("--debug",),
        {"is_flag": True, "envvar": "PYROCLUSTER_DEBUG", "help": "Verbose logs and tracebacks."},
    ),
]
"""The section-2 options every command takes, as ``click.option`` arguments: add one here and it
is a flag of every command, a top-level key of the config file, and (unless it is in
NOT_SETTINGS) an argument of ``Settings.from_sources``."""
debug_option = click.option(
    "--debug",
    is_flag=True,
    envvar="PYROCLUSTER_DEBUG",
    show_envvar=True,
    help="Tracebacks of unexpected errors.",
)
"""``--debug`` alone, for the commands that talk to no cluster (``tls``)."""
NOT_SETTINGS = ("log_format",)
"""Shared options that set up the process rather than its connection settings."""

SECRET_VARIABLES = {"secret_file": "PYROCLUSTER_SECRET", "token_file": "PYROCLUSTER_TOKEN"}
"""A file-only option whose credential an environment variable can give directly: the variable
beats the config file's key (environment over file), never the flag."""


def _file_key(decls: tuple[str, ...]) -> str:
    return next(d for d in decls if d.startswith("--"))[2:].replace("-", "_")


def _section(ctx: click.Context) -> str:
    """The top-level command being run (``worker``, ``submit``...), whose config table applies."""
    while ctx.parent is not None and ctx.parent.parent is not None:
        ctx = ctx.parent
    return ctx.info_name or ""


def _load_config(ctx: click.Context, param: click.Parameter, path: str | None) -> None:
    """``--config``: the file's values become the command's defaults (flags and variables beat them)."""
    if not path:
        return
    from pyrocluster.cli import configfile

    root_ctx = ctx.find_root()
    root = root_ctx.command
    commands: dict[str, click.Command] = {}
    if isinstance(root, click.Group):  # the commands with a table, loaded (they load on demand)
        for name in configfile.SECTIONS:
            command = root.get_command(root_ctx, name)
            if command is not None:
                commands[name] = command
    shared = {_file_key(decls) for decls, _ in SHARED_OPTIONS}
    ctx.default_map = {
        **(ctx.default_map or {}),
        **configfile.default_map(path, ctx, _section(ctx), shared, commands),
    }


def shared_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Attach the settings every command takes (section 2 of the spec), and ``--config``."""
    options = [click.option(*decls, show_envvar=True, **attrs) for decls, attrs in SHARED_OPTIONS]
    options.append(
        click.option(
            "--config",
            envvar="PYROCLUSTER_CONFIG",
            show_envvar=True,
            is_eager=True,
            expose_value=False,
            callback=_load_config,
            metavar="FILE",
            help="TOML config file: shared keys at the top, this command's under its [table].",
        )
    )
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


def health_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--health-port`` and ``--health-host`` of a long-running command (``/livez``, ``/readyz``)."""
    options = [
        click.option(
            "--health-port",
            type=click.IntRange(0, 65535),
            default=None,
            help="Serve GET /livez and /readyz on this port (0 picks one) [default: off].",
        ),
        click.option(
            "--health-host", default="127.0.0.1", show_default=True, help="Address of the health port."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def supervision(
    kw: dict[str, Any],
    settings: Settings,
    insecure: bool,
    probe: Callable[[], str | None],
    ready: Callable[[], str | None],
) -> Supervision:
    """The command's health endpoint (options removed from ``kw``, its port bound: exit 2 before
    anything starts when it cannot be), liveness prober and notify; ``start()`` it once serving."""
    from pyrocluster.config import check_bind
    from pyrocluster.ops.supervise import Supervision

    host, port = kw.pop("health_host"), kw.pop("health_port")
    if port is not None:
        try:
            check_bind(host, settings, insecure)
        except ValueError:
            raise ConfigError(
                f"--health-host {host}: refusing a non-loopback address without a cluster secret "
                "(set --secret-file or PYROCLUSTER_SECRET, or pass --insecure)"
            ) from None
    return Supervision(probe, ready, host, port)


class ByteSize(click.ParamType):
    """A size in bytes: ``8388608``, ``300MiB``, ``1GiB`` (a config file may give a number)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
        elif isinstance(value, str):
            text = value
        else:
            self.fail(f"{value!r} is not a size in bytes", param, ctx)
        what = param.opts[0] if param is not None and param.opts else "size"
        try:
            return check_value_cap(parse_size(text, what), what)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def value_cap_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--max-value-bytes``: the largest single argument or result that crosses the wire."""
    return click.option(
        "--max-value-bytes",
        type=ByteSize(),
        envvar="PYROCLUSTER_MAX_VALUE_BYTES",
        show_envvar=True,
        default=None,
        metavar="SIZE",
        help="Largest single argument or result sent (e.g. 300MiB) [default: 1GiB].",
    )(func)


def direct_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--direct/--no-direct``: lone calls straight to a worker's slot process (on by default)."""
    return click.option(
        "--direct/--no-direct",
        "direct",
        envvar="PYROCLUSTER_DIRECT",
        show_envvar=True,
        default=None,
        help="Send lone calls straight to a worker's slot process (worker: serve them) [default: on].",
    )(func)


def with_direct(settings: Settings, direct: bool | None) -> Settings:
    """``settings`` with ``--direct/--no-direct`` when it was given."""
    return settings if direct is None else replace(settings, direct=direct)


def with_value_cap(settings: Settings, max_value_bytes: int | None) -> Settings:
    """``settings`` with ``--max-value-bytes`` when it was given."""
    return settings if max_value_bytes is None else replace(settings, max_value_bytes=max_value_bytes)


def settings_from(kw: dict[str, Any], info_logs: bool = False) -> Settings:
    """Settings from the shared options (removed from ``kw``); also sets up logging (INFO if asked)."""
    from pyrocluster import logs

    shared = {_file_key(decls): kw.pop(_file_key(decls)) for decls, _ in SHARED_OPTIONS}
    process = {key: shared.pop(key) for key in NOT_SETTINGS}
    ctx = click.get_current_context(silent=True)
    for key, variable in SECRET_VARIABLES.items():
        from_file = ctx is not None and ctx.get_parameter_source(key) is ParameterSource.DEFAULT_MAP
        if from_file and os.environ.get(variable):
            shared[key] = None  # the variable's credential wins over the file's path
    shared["debug"] = shared.get("debug") or None
    try:
        settings = Settings.from_sources(**shared)
    except OSError as exc:
        token_file = shared.get("token_file")
        flag = "--token-file" if exc.filename is not None and exc.filename == token_file else "--secret-file"
        raise ConfigError(f"{flag}: {exc.strerror}: {exc.filename}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    logs.configure(settings.debug, info=info_logs, fmt=process["log_format"] or "text")
    return settings


def require_secret(settings: Settings, action: str) -> None:
    """Refuse (exit 77) to ``action`` with a role token only: servers need the secret to check tokens."""
    if settings.secret is None and settings.token is not None:
        from pyrocluster.auth import own_peer
        from pyrocluster.roles import require_own
        from pyrocluster.tokens import Role

        require_own(own_peer(settings), Role.SECRET, action)


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
        except RoleRefused as exc:
            render.error(str(exc))
            code = EXIT_NOPERM
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
    _relay_signals(stop.set)


def cancel_on_signals(stop: threading.Event) -> None:
    """For ``submit``: the first SIGINT/SIGTERM cancels the job (``stop``) and says so; a second
    one leaves at once with exit 130 (every line already written stays valid)."""
    from pyrocluster.local import stop_when_parent_dies

    stop_when_parent_dies(stop)

    def on_signal() -> None:
        if stop.is_set():
            os._exit(EXIT_INTERRUPTED)
        stop.set()
        render.notice("cancelling the job: stopping its running tasks (press Ctrl-C again to leave at once)")

    _relay_signals(on_signal)


def _relay_signals(on_signal: Callable[[], None]) -> None:
    """SIGINT and SIGTERM call ``on_signal`` on a thread of its own: the handler only writes to a
    pipe. A handler that set an Event itself deadlocked when a second signal came while the
    first was inside ``Event.set`` (its lock is not reentrant), and so would one arriving while
    the main thread held that lock."""
    read_end, write_end = os.pipe()
    contexts: list[contextvars.Context] = []
    """The signalled thread's context at each signal: ``on_signal`` runs in it (its log fields)."""

    def relay() -> None:
        while os.read(read_end, 1):
            context = contexts.pop(0) if contexts else contextvars.copy_context()
            context.run(on_signal)

    threading.Thread(target=relay, name="signals", daemon=True).start()

    def handler(signum: int, frame: Any) -> None:
        contexts.append(contextvars.copy_context())
        os.write(write_end, b"s")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
