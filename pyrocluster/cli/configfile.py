"""The config file: TOML whose keys are the commands' long options, checked against those options.

Shared settings sit at the top, each command's own under ``[worker]``, ``[nameserver]``,
``[submit]``, ``[scheduler]`` or ``[dashboard]``. The schema is the click options themselves (one
definition of every setting, its type and its range), so a key means exactly what its flag
means. Values become click's ``default_map``: click then gives a flag precedence over its
environment variable, and both over the file, and the file over the built-in default.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SECTIONS = ("worker", "nameserver", "submit", "scheduler", "dashboard")
"""The commands that have a table of their own in the file."""
NOT_IN_FILE = frozenset({"config", "help"})
"""Options that make no sense as file keys."""


class ConfigFileError(click.ClickException):
    """A config file that cannot be read or does not fit the schema: exit 2, one line."""

    exit_code = 2


def file_keys(command: click.Command) -> dict[str, click.Option]:
    """Each option of ``command`` by its file key: ``--drain-timeout`` is ``drain_timeout``."""
    keys = {}
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        long = [opt for opt in param.opts if opt.startswith("--")]
        if long:
            key = long[0][2:].replace("-", "_")
            if key not in NOT_IN_FILE:
                keys[key] = param
    return keys


_HEADER = re.compile(r"^\s*\[\[?([^\[\]]+)\]")
"""A table header, ``[worker]``, ``[[worker]]`` or ``[ worker . extra ]``."""
_KEY = re.compile(r"""^\s*("?)([A-Za-z0-9_\-.]+)\1\s*=""")


def key_lines(text: str) -> dict[tuple[str, str], int]:
    """Line number (1-based) of each ``(table, key)``; the top level is table ``""``."""
    lines: dict[tuple[str, str], int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            table = ".".join(part.strip().strip("\"'") for part in header.group(1).split("."))
            lines.setdefault((table, ""), number)
            prefix, _, leaf = table.rpartition(".")  # the table is also a key of its parent
            lines.setdefault((prefix, leaf), number)
            continue
        key = _KEY.match(line)
        if key:
            prefix, _, leaf = key.group(2).rpartition(".")  # a dotted key is relative to its table
            where = ".".join(part for part in (table, prefix) if part)
            lines.setdefault((where, leaf), number)
    return lines


def _expected(param: click.Option) -> tuple[tuple[type, ...], str]:
    """The TOML value types ``param`` takes, and how to say so."""
    if param.is_flag and not param.count:
        return (bool,), "true or false"
    kind = param.type
    if isinstance(kind, (click.types.IntParamType, click.IntRange)):
        return (int,), "a whole number"
    if isinstance(kind, (click.types.FloatParamType, click.FloatRange)):
        return (int, float), "a number"
    if isinstance(kind, click.types.BoolParamType):
        return (bool,), "true or false"
    return (str,), "a string"


class _Checker:
    """Checks one file's tables against the commands' options, naming file, key and line."""

    def __init__(self, path: str, text: str, ctx: click.Context) -> None:
        self.path = path
        self.lines = key_lines(text)
        self.ctx = ctx

    def fail(self, table: str, key: str, problem: str) -> ConfigFileError:
        line = self.lines.get((table, key)) or self.lines.get((table, ""))
        where = f"{self.path}, line {line}" if line else self.path
        name = " ".join(part for part in (f"[{table}]" if table else "", key) if part)
        return ConfigFileError(f"config file {where}: {name}: {problem}")

    def values(self, table: str, data: Mapping[str, Any], options: dict[str, click.Option]) -> dict[str, Any]:
        """``data`` as click's default_map (by parameter name), each value checked and converted."""
        out = {}
        for key, value in data.items():
            param = options.get(key)
            if param is None:
                scope = f"[{table}]" if table else "the top level (shared settings)"
                close = difflib.get_close_matches(key, list(options), n=1)
                hint = f"did you mean {close[0]}?" if close else "known keys: " + ", ".join(sorted(options))
                raise self.fail(table, key, f"unknown key in {scope}; {hint}")
            out[param.name or key] = self.convert(table, key, param, value)
        return out

    def convert(self, table: str, key: str, param: click.Option, value: Any) -> Any:
        types, said = _expected(param)
        items = value if param.multiple else [value]
        if param.multiple and not isinstance(value, list):
            raise self.fail(table, key, f"expected a list of {said.removeprefix('a ')}s, got {_kind(value)}")
        for item in items:
            if not isinstance(item, types) or (bool not in types and isinstance(item, bool)):
                raise self.fail(table, key, f"expected {said}, got {_kind(item)}")
        if param.is_flag:
            return value
        try:
            converted = [param.type.convert(item, param, self.ctx) for item in items]
        except click.BadParameter as exc:
            raise self.fail(table, key, exc.format_message()) from None
        return converted if param.multiple else converted[0]


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "a whole number", float: "a number", str: "a string", list: "a list"}
    return names.get(type(value), f"a {type(value).__name__}")


def read(path: str) -> tuple[str, dict[str, Any]]:
    """The file's text and its TOML tables; ConfigFileError when unreadable or not TOML."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"config file {path}: not UTF-8 text") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"config file {path}: not valid TOML: {exc}") from None


def default_map(
    path: str, ctx: click.Context, section: str, shared: set[str], commands: Mapping[str, click.Command]
) -> dict[str, Any]:
    """The values ``path`` gives the command ``section`` (the whole file is checked).

    ``shared`` names the keys allowed at the top; ``commands`` the commands whose tables are
    checked (each table's keys are that command's options).
    """
    text, data = read(path)
    checker = _Checker(path, text, ctx)
    own = file_keys(ctx.command)
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    values = checker.values("", top, {k: p for k, p in own.items() if k in shared})
    for table, body in tables.items():
        if table not in SECTIONS:
            raise checker.fail(table, "", f"unknown table; the tables are {', '.join(SECTIONS)}")
        command = commands.get(table) or (ctx.command if table == section else None)
        if command is None:
            continue
        checked = checker.values(table, body, file_keys(command))
        if table == section:
            values.update(checked)
    return values
