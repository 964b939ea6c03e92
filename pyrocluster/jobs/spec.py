"""Job file schema and validation: load a YAML job, naming the key path and line of any problem."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic import StringConstraints as _Str

from pyrocluster.errors import JobFileError

DEFAULT_RETRIES = 3
"""Further attempts of a task after a worker died, hung or was unreachable."""
DEFAULT_TIMEOUT_S = 60.0
"""Seconds one attempt of a task may take."""
DEFAULT_CRAWL_MAX_PAGES = 1000
"""Pages a crawl fetches at most."""
DEFAULT_CRAWL_MAX_DEPTH = 3
"""Link depth a crawl follows at most (seeds are depth 0)."""
DEFAULT_CRAWL_PER_HOST_RATE = 10.0
"""Requests per second per host, across all workers."""
DEFAULT_CRAWL_MAX_BYTES = 5_000_000
"""Bytes of a page body kept; the rest is cut off (``truncated: true``)."""
DEFAULT_CRAWL_TIMEOUT_S = 30.0
"""Seconds one page fetch may take."""
PAGE_FIELDS = frozenset(
    "url final_url http_status content_type title links bytes sha256 elapsed_ms truncated".split()
)
"""Fields of a crawl page record; ``extract`` may not reuse them."""
RESERVED_ID_PREFIX = "crawl:"
"""Task ids starting with this are kept for crawl records."""

_HOST_RE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe (C when available) loader that refuses duplicate keys and keeps dates as strings."""

    # A date in args must reach the task as the text the user wrote, not a datetime msgpack can't send.
    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                if (key_node.tag, key_node.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep)  # type: ignore[no-any-return]


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


NonEmpty = Annotated[str, _Str(min_length=1)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Seed = Annotated[str, AfterValidator(_check_seed)]
Allow = Annotated[str, AfterValidator(_check_allow)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Defaults(_Model):
    """The ``defaults`` section: settings every task inherits unless it gives its own."""

    retries: int = Field(DEFAULT_RETRIES, ge=0)
    timeout: Seconds = DEFAULT_TIMEOUT_S
    retry_on_error: bool = False
    tags: list[NonEmpty] = Field(default_factory=list)


class TaskSpec(_Model):
    """One entry of ``tasks``: a call, or a ``map`` of calls."""

    id: NonEmpty
    call: NonEmpty
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    map: list[Any] | None = None
    tags: list[NonEmpty] | None = None
    timeout: Seconds | None = None
    retries: Annotated[int, Field(ge=0)] | None = None
    retry_on_error: bool | None = None


class CrawlSpec(_Model):
    """The ``crawl`` section; ``allow`` defaults to the seeds' ``host[:port]``."""

    seeds: Annotated[list[Seed], Field(min_length=1)]
    allow: Annotated[list[Allow], Field(min_length=1)]
    max_pages: int = Field(DEFAULT_CRAWL_MAX_PAGES, ge=0)
    max_depth: int = Field(DEFAULT_CRAWL_MAX_DEPTH, ge=0)
    per_host_rate: Seconds = DEFAULT_CRAWL_PER_HOST_RATE
    robots: bool = True
    extract: dict[NonEmpty, NonEmpty] = Field(default_factory=dict)
    max_bytes: int = Field(DEFAULT_CRAWL_MAX_BYTES, gt=0)
    timeout: Seconds = DEFAULT_CRAWL_TIMEOUT_S
    user_agent: NonEmpty | None = None


class JobSpec(_Model):
    """A validated job file; ``path`` is the file it came from."""

    name: NonEmpty
    output: NonEmpty
    defaults: Defaults = Field(default_factory=Defaults)
    tasks: list[TaskSpec] = Field(default_factory=list)
    crawl: CrawlSpec | None = None
    _path: str = PrivateAttr("")

    @property
    def path(self) -> str:
        """The job file as given to :func:`load_job`."""
        return self._path


@dataclass(frozen=True, slots=True)
class TaskItem:
    """One compute call of a job, defaults applied (``kwargs`` is shared by a map's items: don't mutate)."""

    id: str
    call: str
    args: list[Any]
    kwargs: dict[str, Any]
    tags: tuple[str, ...]
    timeout_s: float
    retries: int
    retry_on_error: bool


_SECTIONS: dict[tuple[str, ...], type[BaseModel]] = {
    (): JobSpec,
    ("defaults",): Defaults,
    ("tasks",): TaskSpec,
    ("crawl",): CrawlSpec,
}
_EXPECTED = {
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"{'an integer' if isinstance(value, int) else 'a number'} ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    return {list: "a list", dict: "a mapping", bytes: "binary data"}.get(type(value), type(value).__name__)


def _message(err: dict[str, Any]) -> str:
    kind, loc, ctx, value = err["type"], err["loc"], err.get("ctx", {}), err.get("input")
    if kind == "missing":
        return f"missing required key '{loc[-1]}'"
    if kind in ("extra_forbidden", "invalid_key"):
        allowed = _SECTIONS[tuple(p for p in loc[:-1] if isinstance(p, str))].model_fields
        close = difflib.get_close_matches(str(loc[-1]), list(allowed), n=1)
        hint = f"did you mean '{close[0]}'?" if close else "allowed: " + ", ".join(allowed)
        return f"unknown key {str(loc[-1])!r} ({hint})"
    if loc and loc[-1] == "[key]":
        return f"keys must be strings, got {_describe(value)}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_describe(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, got {value!r}"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']}, got {value!r}"
    if kind in ("string_too_short", "too_short"):
        return "must not be empty"
    if kind == "finite_number":
        return "must be a finite number"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return str(err["msg"])


def _line(text: str, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest node of ``loc`` present in the file (composes the YAML: error path only)."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    line = node.start_mark.line
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(key)]
            if not found:
                break
            line, node = found[-1][0].start_mark.line, found[-1][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line
        else:
            break
    return int(line) + 1


def _fail(path: str, text: str, data: Any, loc: tuple[Any, ...], message: str) -> JobFileError:
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
    where, line = "".join(parts), _line(text, loc)
    if line is not None:
        where = f"{where} (line {line})" if where else f"line {line}"
    return JobFileError(path, where, message)


def _prepare(data: dict[Any, Any], stem: str) -> set[int]:
    """Fill in the defaults that depend on the file or on other keys; return the tasks given no id."""
    data.setdefault("name", stem)
    if isinstance(data["name"], str):
        data.setdefault("output", f"{data['name']}.results.jsonl")
    tasks, unnamed = data.get("tasks"), set[int]()
    for index, task in enumerate(tasks if isinstance(tasks, list) else ()):
        if isinstance(task, dict) and "id" not in task:
            task["id"] = f"task-{index}"
            unnamed.add(index)
    crawl = data.get("crawl")
    if isinstance(crawl, dict) and "allow" not in crawl and isinstance(crawl.get("seeds"), list):
        allow: list[str] = []
        for seed in crawl["seeds"]:
            try:
                parts = urlsplit(_check_seed(seed))
                entry = _host_port(str(parts.hostname), parts.port)
            except (ValueError, TypeError, AttributeError):
                continue  # the seed itself is reported
            if entry not in allow:
                allow.append(entry)
        crawl["allow"] = allow or ["-"]  # nothing valid: the seed error is reported first
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
            raise fail(id_loc, f"task id {task.id!r}: ids starting {RESERVED_ID_PREFIX!r} are for crawl pages")
        if task.map is None:
            if task.id in singles:
                raise fail(id_loc, f"duplicate task id {task.id!r} (also tasks[{singles[task.id]}])")
            singles[task.id] = j
            continue
        if "args" in task.model_fields_set:
            raise fail(("tasks", j, "args"), "'args' cannot be given with 'map' (each map item is the args)")
        if task.id in maps and task.map:
            raise fail(id_loc, f"duplicate task id {task.id!r} (also tasks[{maps[task.id][0]}])")
        if task.map:
            maps[task.id] = (j, len(task.map))
    for task_id, j in singles.items():
        base, _, k = task_id.rpartition("-")
        if k.isascii() and k.isdigit() and (k == "0" or k[0] != "0") and base in maps:
            index, count = maps[base]
            if int(k) < count:
                loc = ("tasks", j) if j in unnamed else ("tasks", j, "id")
                raise fail(loc, f"task id {task_id!r} clashes with item {k} of the map in tasks[{index}]")
    if spec.crawl is not None:
        for field, selector in spec.crawl.extract.items():
            if field in PAGE_FIELDS:
                raise fail(("crawl", "extract", field), f"field {field!r} would replace a page record field")
            if not _css_ok(selector):
                raise fail(("crawl", "extract", field), f"{selector!r} is not a valid CSS selector")


def _css_ok(selector: str) -> bool:
    try:
        from selectolax.lexbor import LexborHTMLParser
    except ImportError:  # pragma: no cover - the crawl service reports it then
        return True
    try:
        LexborHTMLParser("<p></p>").css_first(selector)
    except Exception:  # selectolax raises its own error type, which differs across versions
        return False
    return True


def load_job(path: str | Path) -> JobSpec:
    """Read and validate a job file; every problem raises :class:`JobFileError` naming its place."""
    shown, file = str(path), Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobFileError(shown, "", "no such file") from None
    except IsADirectoryError:
        raise JobFileError(shown, "", "is a directory, not a job file") from None
    except UnicodeDecodeError as exc:
        raise JobFileError(shown, "", f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise JobFileError(shown, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise JobFileError(shown, where, f"invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise JobFileError(shown, "", f"invalid YAML: {exc}") from None

    def fail(loc: tuple[Any, ...], message: str) -> JobFileError:
        return _fail(shown, text, data, loc, message)

    if not isinstance(data, dict):
        raise fail((), "the file is empty" if data is None else f"expected a mapping, got {_describe(data)}")
    unnamed = _prepare(data, file.stem)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise fail(tuple(err["loc"]), _message(dict(err))) from None
    _check(spec, unnamed, fail)
    spec._path = shown
    return spec


def _resolved(task: TaskSpec, defaults: Defaults) -> tuple[tuple[str, ...], float, int, bool]:
    tags = task.tags if task.tags is not None else defaults.tags
    return (
        tuple(sorted(set(tags))),
        task.timeout if task.timeout is not None else defaults.timeout,
        task.retries if task.retries is not None else defaults.retries,
        task.retry_on_error if task.retry_on_error is not None else defaults.retry_on_error,
    )


def iter_task_items(spec: JobSpec) -> Iterator[TaskItem]:
    """Yield every compute call of the job lazily, maps expanded to ``<id>-<k>``."""
    for task in spec.tasks:
        tags, timeout_s, retries, on_error = _resolved(task, spec.defaults)
        if task.map is None:
            yield TaskItem(task.id, task.call, task.args, task.kwargs, tags, timeout_s, retries, on_error)
            continue
        for k, item in enumerate(task.map):
            args = item if isinstance(item, list) else [item]
            yield TaskItem(f"{task.id}-{k}", task.call, args, task.kwargs, tags, timeout_s, retries, on_error)


def count_task_items(spec: JobSpec) -> int:
    """Number of compute calls :func:`iter_task_items` yields."""
    return sum(1 if task.map is None else len(task.map) for task in spec.tasks)


def task_names(spec: JobSpec) -> set[str]:
    """Compute task names the job calls (to check against the workers' registries)."""
    return {task.call for task in spec.tasks if task.map is None or task.map}


def required_tags(spec: JobSpec) -> set[tuple[str, ...]]:
    """Distinct non-empty tag sets (sorted tuples) that some worker must carry in full."""
    tag_sets = (_resolved(task, spec.defaults)[0] for task in spec.tasks if task.map is None or task.map)
    return {tags for tags in tag_sets if tags}
