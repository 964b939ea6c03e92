"""Job file schema and validation: load a YAML job, naming the key path and line of any problem."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
)

from pyrocluster.defaults import (
    DEFAULT_CRAWL_MAX_BYTES,
    DEFAULT_CRAWL_MAX_DEPTH,
    DEFAULT_CRAWL_MAX_PAGES,
    DEFAULT_CRAWL_PER_HOST_RATE,
    DEFAULT_CRAWL_TIMEOUT_S,
    DEFAULT_RETRIES,
    DEFAULT_TASK_TIMEOUT_S,
    MAX_PRIORITY,
    MAX_TIMEOUT_S,
)
from pyrocluster.errors import JobFileError
from pyrocluster.jobs.crawlchecks import check_crawl
from pyrocluster.jobs.graph import RESULT_KEY, build_graph
from pyrocluster.jobs.nesting import Place, check_nesting, too_deep_to_read
from pyrocluster.jobs.yamlread import expanded_values, line_of, read_yaml
from pyrocluster.resources import parse_mapping

RESERVED_ID_PREFIX = "crawl:"
"""Task ids starting with this are kept for crawl records."""

_HOST_RE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


def _host_ok(host: str | None) -> bool:
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _HOST_RE.fullmatch(host) is not None


def _check_seed(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http(s) URL")
    if not _host_ok(parts.hostname):
        raise ValueError(f"{url!r} has no valid host")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return url


def _host_port(host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host
    return host if port is None else f"{host}:{port}"


def _check_allow(entry: str) -> str:
    if "/" in entry or "@" in entry or entry != entry.strip():
        raise ValueError(f"{entry!r} is not host[:port] (give the host, not a URL)")
    parts = urlsplit("//" + entry)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{entry!r} has an invalid port") from None
    if not _host_ok(parts.hostname):
        raise ValueError(f"{entry!r} is not host[:port]")
    return _host_port(str(parts.hostname), port)


def _check_secret(value: Any) -> Any:
    """A header or cookie value: a one-line string, or ``{env: NAME}`` (read when the crawl starts)."""
    if isinstance(value, str):
        if any(c in value for c in "\r\n\0"):
            raise ValueError("a header or cookie value must be one line")
        return value
    if isinstance(value, dict) and list(value) == ["env"] and isinstance(value["env"], str) and value["env"]:
        return value
    raise ValueError(f"expected a string or {{env: NAME}}, got {_describe(value)}")


def secret_values(values: Mapping[str, Any]) -> dict[str, str]:
    """``headers`` / ``cookies`` with every ``{env: NAME}`` read from the environment.

    The values read are only ever sent to the crawl's allowed hosts: never written anywhere.
    """
    return {key: os.environ.get(v["env"], "") if isinstance(v, dict) else v for key, v in values.items()}


NonEmpty = Annotated[str, StringConstraints(min_length=1)]


def _check_name(name: str) -> str:
    if any(c in name for c in "/\\\0") or name in (".", ".."):  # it names <name>.results.jsonl here
        raise ValueError(f"{name!r}: a job name may not hold '/', '\\' or NUL, nor be '.' or '..'")
    return name


JobName = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_check_name)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
TaskSeconds = Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)]
"""A task's timeout: what a worker accepts (a longer one would fail every call at run time)."""
Priority = Annotated[int, Field(ge=-MAX_PRIORITY, le=MAX_PRIORITY)]
Seed = Annotated[str, AfterValidator(_check_seed)]
Allow = Annotated[str, AfterValidator(_check_allow)]
Secret = Annotated[Any, AfterValidator(_check_secret)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _check_map(value: Any) -> Any:
    if value is None or isinstance(value, list) or (isinstance(value, dict) and RESULT_KEY in value):
        return value
    raise ValueError(f"expected a list or {{$result: ID}}, got {_describe(value)}")


MapSpec = Annotated[Any, AfterValidator(_check_map)]


def _check_resources(value: dict[str, Any]) -> dict[str, float]:
    return parse_mapping(value)


ResourcesSpec = Annotated[dict[str, Any], AfterValidator(_check_resources)]
"""``{cpu: 2, memory: 4GiB, gpu: 1, licence: 1}``: what each call asks of its worker (SPEC 10)."""


class CallbackSpec(_Model):
    """``on_success`` / ``on_failure``: a compute task run once after an outcome, the record appended."""

    call: NonEmpty
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class Defaults(_Model):
    """The ``defaults`` section: settings every task inherits unless it gives its own."""

    retries: int = Field(default=DEFAULT_RETRIES, ge=0)
    timeout: TaskSeconds = DEFAULT_TASK_TIMEOUT_S
    retry_on_error: bool = False
    tags: list[NonEmpty] = Field(default_factory=list)
    priority: Priority = 0
    resources: ResourcesSpec | None = None
    on_success: CallbackSpec | None = None
    on_failure: CallbackSpec | None = None


class TaskSpec(_Model):
    """One entry of ``tasks``: a call, or a ``map`` of calls."""

    id: NonEmpty
    call: NonEmpty
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    map: MapSpec = None
    """A list (one call per item) or ``{$result: ID}`` (one call per item of an upstream's list)."""
    needs: list[NonEmpty] = Field(default_factory=list)
    tags: list[NonEmpty] | None = None
    timeout: TaskSeconds | None = None
    retries: Annotated[int, Field(ge=0)] | None = None
    retry_on_error: bool | None = None
    priority: Priority | None = None
    resources: ResourcesSpec | None = None
    on_success: CallbackSpec | None = None
    on_failure: CallbackSpec | None = None

    @property
    def dynamic(self) -> bool:
        """True for ``map: {$result: ID}``."""
        return isinstance(self.map, dict)


class CrawlSpec(_Model):
    """The ``crawl`` section; ``allow`` defaults to the seeds' ``host[:port]``."""

    seeds: Annotated[list[Seed], Field(min_length=1)]
    allow: Annotated[list[Allow], Field(min_length=1)] | None = None
    """Set from the seeds when not given (``_prepare``); None only when no seed gives a host."""
    max_pages: int = Field(default=DEFAULT_CRAWL_MAX_PAGES, ge=0)
    max_depth: int = Field(default=DEFAULT_CRAWL_MAX_DEPTH, ge=0)
    per_host_rate: Seconds = DEFAULT_CRAWL_PER_HOST_RATE
    robots: bool = True
    extract: dict[NonEmpty, NonEmpty] = Field(default_factory=dict)
    max_bytes: int = Field(default=DEFAULT_CRAWL_MAX_BYTES, gt=0)
    timeout: Seconds = DEFAULT_CRAWL_TIMEOUT_S
    user_agent: NonEmpty | None = None
    state: NonEmpty | None = None
    """SQLite file of the incremental crawl (relative to the current directory)."""
    revisit: Literal["changed", "all", "new"] | None = None
    sitemaps: bool = False
    headers: dict[NonEmpty, Secret] = Field(default_factory=dict)
    cookies: dict[NonEmpty, Secret] = Field(default_factory=dict)


class JobSpec(_Model):
    """A validated job file; ``path`` is the file it came from."""

    name: JobName
    output: NonEmpty
    defaults: Defaults = Field(default_factory=Defaults)
    tasks: list[TaskSpec] = Field(default_factory=list)
    crawl: CrawlSpec | None = None
    on_success: CallbackSpec | None = None
    """Run once when the job ends with no failure, the summary appended (id ``job:on_success``)."""
    on_failure: CallbackSpec | None = None
    """Run once when the job ends with failures, the summary appended (id ``job:on_failure``)."""
    _path: str = PrivateAttr("")

    @property
    def path(self) -> str:
        """The job file as given to :func:`load_job`."""
        return self._path


_SECTIONS: dict[tuple[str, ...], type[BaseModel]] = {
    (): JobSpec,
    ("defaults",): Defaults,
    ("tasks",): TaskSpec,
    ("crawl",): CrawlSpec,
    ("on_success",): CallbackSpec,
    ("on_failure",): CallbackSpec,
    ("tasks", "on_success"): CallbackSpec,
    ("tasks", "on_failure"): CallbackSpec,
    ("defaults", "on_success"): CallbackSpec,
    ("defaults", "on_failure"): CallbackSpec,
}
_EXPECTED = dict(
    list_type="a list",
    dict_type="a mapping",
    model_type="a mapping",
    model_attributes_type="a mapping",
    string_type="a string",
    int_type="an integer",
    float_type="a number",
    bool_type="true or false",
)
_FIXED = dict(
    string_too_short="must not be empty", too_short="must not be empty", finite_number="must be finite"
)
_NAMES: dict[type, str] = {list: "a list", dict: "a mapping", bytes: "binary data"}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"{'an integer' if isinstance(value, int) else 'a number'} ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    return _NAMES.get(type(value), type(value).__name__)


def _message(err: dict[str, Any], sections: Mapping[tuple[str, ...], type[BaseModel]] = _SECTIONS) -> str:
    kind, loc, ctx, value = err["type"], err["loc"], err.get("ctx", {}), err.get("input")
    if kind == "missing":
        return f"missing required key '{loc[-1]}'"
    if kind in ("extra_forbidden", "invalid_key"):
        allowed = sections.get(tuple(p for p in loc[:-1] if isinstance(p, str)), sections[()]).model_fields
        close = difflib.get_close_matches(str(loc[-1]), list(allowed), n=1)
        hint = f"did you mean '{close[0]}'?" if close else "allowed: " + ", ".join(allowed)
        return f"unknown key {str(loc[-1])!r} ({hint})"
    if loc and loc[-1] == "[key]":
        return f"keys must be strings, got {_describe(value)}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_describe(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, got {value!r}"
    if kind == "less_than_equal":
        most = ctx["le"]
        return f"must be at most {int(most) if float(most).is_integer() else most}, got {value!r}"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']}, got {value!r}"
    if kind in _FIXED:
        return _FIXED[kind]
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return str(err["msg"])


def located_error(path: str, text: str, data: Any, loc: tuple[Any, ...], message: str) -> JobFileError:
    """A JobFileError naming ``loc`` as a key path (``tasks[2].call``) and its line in ``text``."""
    parts: list[str] = []
    for key in loc:
        if key == "[key]":
            continue
        if isinstance(data, list) and isinstance(key, int):
            parts.append(f"[{key}]")
            data = data[key] if key < len(data) else None
        else:
            parts.append(f".{key}" if parts else str(key))
            data = data.get(key) if isinstance(data, dict) else None
    where, line = "".join(parts), line_of(text, loc)
    if line is not None:
        where = f"{where} (line {line})" if where else f"line {line}"
    return JobFileError(path, where, message)


def _prepare(data: dict[Any, Any], stem: str) -> set[int]:
    """Fill in the defaults that depend on the file or on other keys; return the tasks given no id."""
    data.setdefault("name", stem)
    # (a name that is not a string is reported; the placeholder keeps 'output' from being reported too)
    data.setdefault("output", f"{data['name'] if isinstance(data['name'], str) else stem}.results.jsonl")
    unnamed: set[int] = set()
    if isinstance(data.get("tasks"), list):
        # Copies: a task written once with an anchor and reused by alias still gets one id per entry.
        data["tasks"] = [dict(task) if isinstance(task, dict) else task for task in data["tasks"]]
        for index, task in enumerate(data["tasks"]):
            if isinstance(task, dict) and "id" not in task:
                task["id"] = f"task-{index}"
                unnamed.add(index)
    crawl = data.get("crawl")
    if isinstance(crawl, dict) and "allow" not in crawl and isinstance(crawl.get("seeds"), list):
        crawl = data["crawl"] = dict(crawl)
        allow: list[str] = []
        for seed in crawl["seeds"]:
            try:
                parts = urlsplit(_check_seed(seed))
                entry = _host_port(str(parts.hostname), parts.port)
            except (ValueError, TypeError, AttributeError):
                continue  # the seed itself is reported
            if entry not in allow:
                allow.append(entry)
        if allow:  # else the seeds are reported
            crawl["allow"] = allow
    return unnamed


def _check(spec: JobSpec, unnamed: set[int], fail: Any) -> None:
    """Rules across keys: map vs args, unique ids, extract fields, something to run."""
    if not spec.tasks and spec.crawl is None:
        raise fail((), "nothing to run: give 'tasks', 'crawl' or both")
    maps: dict[str, tuple[int, int]] = {}
    singles: dict[str, int] = {}
    for j, task in enumerate(spec.tasks):
        # A default id names the task, not an ``id`` key the user never wrote.
        id_loc = ("tasks", j) if j in unnamed else ("tasks", j, "id")
        if task.id.startswith(RESERVED_ID_PREFIX):
            raise fail(
                id_loc, f"task id {task.id!r}: ids starting {RESERVED_ID_PREFIX!r} are for crawl pages"
            )
        if task.id.endswith((":on_success", ":on_failure")):  # a callback's record would replace it
            why = "ids ending ':on_success' or ':on_failure' are callbacks"
            raise fail(id_loc, f"task id {task.id!r}: {why}")
        if task.map is None:
            if task.id in singles:
                raise fail(id_loc, f"duplicate task id {task.id!r} (also tasks[{singles[task.id]}])")
            singles[task.id] = j
            continue
        if "args" in task.model_fields_set:
            raise fail(("tasks", j, "args"), "'args' cannot be given with 'map' (each map item is the args)")
        if task.id in maps and task.map:
            raise fail(id_loc, f"duplicate task id {task.id!r} (also tasks[{maps[task.id][0]}])")
        if task.map:  # a dynamic map's item ids are checked by the graph
            maps[task.id] = (j, 0 if task.dynamic else len(task.map))
    for task_id, j in singles.items():
        base, _, k = task_id.rpartition("-")
        if k.isascii() and k.isdigit() and (k == "0" or k[0] != "0") and base in maps:
            index, count = maps[base]
            if int(k) < count:
                loc = ("tasks", j) if j in unnamed else ("tasks", j, "id")
                raise fail(loc, f"task id {task_id!r} clashes with item {k} of the map in tasks[{index}]")
    if spec.crawl is not None:
        check_crawl(spec.crawl, fail)


def read_document(path: str | Path) -> tuple[str, Any]:
    """The text of a YAML file and what it holds; JobFileError (with the line) when it cannot be read."""
    shown = str(path)
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # a FIFO would block, a device not end
            raise JobFileError(shown, "", "is not a regular file (a pipe or a device): give a job file")
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobFileError(shown, "", "no such file") from None
    except IsADirectoryError:
        raise JobFileError(shown, "", "is a directory, not a job file") from None
    except UnicodeDecodeError as exc:
        raise JobFileError(shown, "", f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise JobFileError(shown, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        document = read_yaml(text)
        if "&" in text and "*" in text:  # anchors and aliases: a value may be used many times over
            expanded_values(document)
        return text, document
    except yaml.MarkedYAMLError as exc:
        mark, problem = exc.problem_mark or exc.context_mark, exc.problem or exc.context
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        line = text.splitlines()[mark.line] if mark and mark.line < len(text.splitlines()) else ""
        if "\t" in line[: len(line) - len(line.lstrip())]:  # PyYAML only says it cannot start a token
            raise JobFileError(shown, where, "a tab indents this line: YAML indents with spaces") from None
        if exc.context and exc.context_mark and exc.problem:
            problem += f" ({exc.context} on line {exc.context_mark.line + 1})"
        raise JobFileError(shown, where, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise JobFileError(shown, "", f"invalid YAML: {exc}") from None
    except RecursionError:  # a JSON-style map item nested hundreds of levels deep (jsonruns)
        raise too_deep_to_read(shown, text) from None


MAX_PROBLEMS = 20
"""Most problems of one file reported at once (a file of wrong indentation can have thousands)."""


def validation_error(
    path: str,
    text: str,
    data: Any,
    exc: ValidationError,
    sections: Mapping[tuple[str, ...], type[BaseModel]] = _SECTIONS,
) -> JobFileError:
    """Every problem pydantic found (up to ``MAX_PROBLEMS``), each at its key path and line, as one
    JobFileError of one line per problem (``sections`` give key hints)."""
    problems = [
        located_error(path, text, data, tuple(err["loc"]), _message(dict(err), sections))
        for err in exc.errors(include_url=False)[:MAX_PROBLEMS]
    ]
    return JobFileError.several(problems)


def describe_value(value: Any) -> str:
    """``a string ('x')``, ``an integer (3)``, ``a list``...: what an error message says was found."""
    return _describe(value)


def _value_places(spec: JobSpec) -> Iterator[Place]:
    """Every ``args``, ``kwargs`` and static ``map`` of the job (callbacks' too), with its key path."""
    callbacks: list[tuple[tuple[Any, ...], CallbackSpec | None]]
    callbacks = [(("defaults", k), getattr(spec.defaults, k)) for k in ("on_success", "on_failure")]
    callbacks += [((k,), getattr(spec, k)) for k in ("on_success", "on_failure")]
    for j, task in enumerate(spec.tasks):
        yield ("tasks", j, "args"), task.args, False
        yield ("tasks", j, "kwargs"), task.kwargs, False
        if isinstance(task.map, list):
            yield ("tasks", j, "map"), task.map, True
        callbacks += [(("tasks", j, k), getattr(task, k)) for k in ("on_success", "on_failure")]
    for loc, callback in callbacks:
        if callback is not None:
            yield (*loc, "args"), callback.args, False
            yield (*loc, "kwargs"), callback.kwargs, False


def load_job(path: str | Path) -> JobSpec:
    """Read and validate a job file; every problem raises :class:`JobFileError` naming its place."""
    shown, file = str(path), Path(path)
    text, data = read_document(path)

    def fail(loc: tuple[Any, ...], message: str) -> JobFileError:
        return located_error(shown, text, data, loc, message)

    if not isinstance(data, dict):
        raise fail((), "the file is empty" if data is None else f"expected a mapping, got {_describe(data)}")
    unnamed = _prepare(data, file.stem)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(shown, text, data, exc) from None
    check_nesting(_value_places(spec), fail)
    _check(spec, unnamed, fail)
    build_graph(spec.tasks, fail)
    spec._path = shown
    return spec
