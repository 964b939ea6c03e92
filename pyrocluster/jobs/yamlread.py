"""Fast, safe YAML reading for job files, and the line of a key path (for error messages)."""

from __future__ import annotations

import sys
from typing import Any

import yaml

from pyrocluster.jobs.jsonruns import Runs, find_runs

_YAML = "tag:yaml.org,2002:"
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_START = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_END = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """Safe (C when available) loader that refuses duplicate keys and keeps dates as strings."""

    # A date in args must reach the task as the text the user wrote, not a datetime msgpack can't send.
    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != _YAML + "timestamp"]
        for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _YAML + "merge":
                if (key_node.tag, key_node.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep)  # type: ignore[no-any-return]

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """An int, or a ConstructorError with its line when it has more digits than int() takes."""
        try:
            return super().construct_yaml_int(node)  # type: ignore[no-any-return]
        except ValueError:
            raise _too_long(node.value, node.start_mark) from None


def _too_long(value: str, mark: Any) -> yaml.constructor.ConstructorError:
    limit = sys.get_int_max_str_digits()
    return yaml.constructor.ConstructorError(
        None, None, f"an integer of {len(value)} characters (Python reads at most {limit} digits)", mark
    )


_Loader.add_constructor(_YAML + "int", _Loader.construct_yaml_int)


class _Slow(Exception):
    """The document uses a YAML feature (tags, merge keys, complex keys) left to PyYAML's constructor,
    or has an error the loader reports (a duplicate key or anchor, an int over the digit limit)."""


def _scalar(event: Any, loader: Any) -> tuple[str, Any]:
    """``(tag, value)`` of a scalar as the loader resolves it; the tag says how the key was written."""
    value = event.value
    if event.tag not in (None, "!"):
        raise _Slow
    if not event.implicit[0]:  # quoted
        return _STR, value
    if value.isdigit() and value.isascii() and (value[0] != "0" or value == "0"):
        try:
            return _INT, int(value)
        except ValueError:  # more digits than int() takes: the loader's error, with its line
            raise _Slow from None
    resolvers = _Loader.yaml_implicit_resolvers
    for tag, rx in resolvers.get(value[:1], []) + resolvers.get(None, []):
        if rx.match(value):
            if tag not in _Loader.yaml_constructors:
                raise _Slow
            node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark)
            return tag, _Loader.yaml_constructors[tag](loader, node)
    return _STR, value


_STR, _INT = _YAML + "str", _YAML + "int"


class _Moved(Exception):
    """A placeholder of :mod:`jsonruns` did not land as a block-sequence item where it was put."""


def read_yaml(text: str) -> Any:
    """Load YAML like ``_Loader`` does, building objects straight from the C parser's events.

    PyYAML's constructor keeps a node per value and takes ~40 s on a 1,000,000-item ``map``;
    this takes a few seconds, and long runs of JSON-style items (``- [1, 2]``) are decoded by
    orjson (see :mod:`pyrocluster.jobs.jsonruns`). Rare features fall back to the full loader;
    errors are always those of the original text.
    """
    runs = find_runs(text)
    if runs is not None:
        try:
            return _from_events(runs.text, runs)
        except (_Slow, _Moved, yaml.YAMLError):
            pass  # the original text decides, errors and line numbers included
    try:
        return _from_events(text, None)
    except _Slow:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader


MAX_EXPANDED_VALUES = 10_000_000
"""Most values a document may hold once its aliases are counted at each use: ten levels of ten
aliases to the level above (the "billion laughs") read as a kilobyte and walk as 10**10 values."""


def expanded_values(document: Any) -> int:
    """How many values ``document`` holds, each shared one counted at each of its uses (by a walk
    that measures each container once); YAMLError past ``MAX_EXPANDED_VALUES`` or for a value that
    holds itself (a recursive alias)."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[Any] = [document]
    while stack:
        value = stack[-1]
        key = id(value)
        if key in sizes:
            stack.pop()
            continue
        parts = [p for p in _parts(value) if isinstance(p, (list, dict)) and id(p) not in sizes]
        if key not in open_:
            open_.add(key)
            if any(id(p) in open_ for p in parts):
                raise yaml.YAMLError("an alias refers to a value that holds it (a recursive alias)")
            stack.extend(parts)
            continue
        size = 1 + sum(sizes.get(id(p), 1) for p in _parts(value))
        if size > MAX_EXPANDED_VALUES:
            raise yaml.YAMLError(f"its aliases expand it to more than {MAX_EXPANDED_VALUES:,} values")
        sizes[key] = size
        open_.discard(key)
        stack.pop()
    return sizes.get(id(document), 1)


def _parts(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    return value if isinstance(value, list) else []


def _splice(runs: Runs, event: Any, stack: list[list[Any]]) -> None:
    """Put a run's items where its placeholder is, or raise ``_Moved`` if it is not a block item."""
    items = runs.items.pop(event.start_mark.line, None)
    top = stack[-1] if stack else None
    if (
        items is None
        or not event.implicit[0]
        or event.anchor
        or top is None
        or type(top[0]) is not list
        or top[4]  # a flow sequence (libyaml refuses "- " in one anyway)
    ):
        raise _Moved
    top[0].extend(items)


def _from_events(text: str, runs: Runs | None) -> Any:
    """The document of ``text`` with ``runs`` spliced in; ``_Slow`` for what the full loader must do."""
    loader = _Loader(text)
    # [container, pending key, has key, key mark, flow style, keys as written (tag, text)]
    stack: list[list[Any]] = []
    anchors: dict[str, Any] = {}
    result, documents = None, 0
    placeholder = runs.placeholder if runs is not None else None
    try:
        while True:
            event = loader.get_event()
            kind = type(event)
            if kind is yaml.ScalarEvent:
                if event.value == placeholder:
                    _splice(runs, event, stack)  # type: ignore[arg-type]
                    continue
                tag, obj = _scalar(event, loader)
                if event.anchor:
                    _anchor(anchors, event.anchor, obj)
            elif kind in _START:
                is_list = kind is yaml.SequenceStartEvent
                if event.tag not in (None, "!", _YAML + ("seq" if is_list else "map")):
                    raise _Slow
                obj = [] if is_list else {}
                if event.anchor:
                    _anchor(anchors, event.anchor, obj)
                stack.append([obj, None, False, None, event.flow_style, None if is_list else set()])
                continue
            elif kind in _END:
                obj = stack.pop()[0]
            elif kind is yaml.AliasEvent:
                if event.anchor not in anchors:
                    raise _Slow
                obj = anchors[event.anchor]
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise _Slow
                continue
            elif kind is yaml.StreamEndEvent:
                if runs is not None and runs.items:
                    raise _Moved
                return result
            else:
                continue
            if not stack:
                result = obj
                continue
            top = stack[-1]
            if type(top[0]) is list:
                top[0].append(obj)
            elif top[2]:
                top[0][top[1]] = obj
                top[2] = False
            elif kind is not yaml.ScalarEvent:  # a collection or an alias as a key
                raise _Slow
            else:
                # A key is a duplicate when written the same (its tag and text), as _Loader judges
                # it: {1: a, 1.0: b} is not one, {a: 1, 'a': 2} is. The loader reports it, after
                # any error in composing the rest of the document, as its construction does.
                written = (tag, event.value)
                if written in top[5]:
                    raise _Slow
                top[5].add(written)
                top[1:4] = [obj, True, event.start_mark]
    finally:
        loader.dispose()


def _anchor(anchors: dict[str, Any], name: str, obj: Any) -> None:
    """Keep ``obj`` under its anchor; a second anchor of one name is the loader's error to raise."""
    if name in anchors:
        raise _Slow
    anchors[name] = obj


def _skip(loader: Any, event: Any) -> None:
    depth = 1 if isinstance(event, _START) else 0
    while depth:
        event = loader.get_event()
        depth += 1 if isinstance(event, _START) else -1 if isinstance(event, _END) else 0


def line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest part of ``loc`` present in the file (error path only)."""
    loader = _Loader(text)
    try:
        while not isinstance(event := loader.get_event(), (yaml.NodeEvent, yaml.StreamEndEvent)):
            pass
        line = event.start_mark.line
        for key in loc:
            if isinstance(event, yaml.MappingStartEvent):
                while not isinstance(event := loader.get_event(), yaml.MappingEndEvent):
                    found = isinstance(event, yaml.ScalarEvent) and event.value == str(key)
                    _skip(loader, event)
                    if found:
                        line, event = event.start_mark.line, loader.get_event()
                        break
                    _skip(loader, loader.get_event())
                else:
                    break
            elif isinstance(event, yaml.SequenceStartEvent) and isinstance(key, int):
                for _ in range(key):
                    if isinstance(event := loader.get_event(), yaml.SequenceEndEvent):
                        return int(line) + 1
                    _skip(loader, event)
                event = loader.get_event()
                if isinstance(event, yaml.SequenceEndEvent):
                    break
                line = event.start_mark.line
            else:
                break
        return int(line) + 1
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()
