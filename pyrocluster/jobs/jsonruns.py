"""Long runs of JSON-style block-sequence items (``- [1, 2]``) read by orjson instead of the YAML parser.

A 20,000-item ``map`` written one ``- [i, i]`` per line makes PyYAML emit 80,000 event objects;
orjson decodes the same lines about ten times faster. :func:`find_runs` replaces each run of such
lines by one placeholder item, and the YAML reader splices the decoded items in where the
placeholder lands (it checks that it landed as an item of a block sequence, at the line and column
expected, else it reads the original text instead).

A line takes this path only when YAML and JSON cannot read it differently. The grammar allowed is
a strict subset of both, which gives the same values in both:

- strings of printable ASCII with no backslash (so no escape, which JSON and YAML treat apart,
  and no character YAML 1.1 reads as a line break);
- integers of at most 18 digits, no ``-0`` (always an int64 in both);
- decimals with a dot, no exponent, at most 15 digits (PyYAML reads ``1e3`` as a string; 15
  digits divided by a power of ten round the same way in any correct parser);
- ``true``, ``false``, ``null``; ``[ ] { } , :`` and spaces (no tabs, comments, anchors, aliases,
  tags or plain strings);
- each line exactly one JSON value, and no duplicate key in an object (YAML refuses those).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import orjson

MIN_RUN = 16
"""Fewer lines than this in a run are left to the YAML parser (nothing to gain)."""
PLACEHOLDER = "pyrocluster-json-run"
"""The placeholder item's text (a suffix is added when the file holds it already)."""

_TOKEN = (
    r"(?:[ ,:\[\]{}]+"
    r'|"[ !#-\[\]-~]*"'
    r"|(?:0|-?[1-9][0-9]{0,17})(?![0-9.eE])"
    r"|-?(?=[0-9.]{3,16}(?![0-9.]))(?:0|[1-9][0-9]*)\.[0-9]+(?![0-9eE])"
    r"|true|false|null)"
)
_ITEM = rf"- [\[{{]{_TOKEN}*+"
_RUN = re.compile(rf"^( *){_ITEM}(?:\n\1{_ITEM})*$", re.MULTILINE)
_KEY = re.compile(r'"[^"]*"( *:)?')


@dataclass
class Runs:
    """The text with its runs replaced, and each run's decoded items by the placeholder's 0-based line."""

    text: str
    placeholder: str
    items: dict[int, list[Any]] = field(default_factory=dict)


def _keys(value: Any) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_keys(v) for v in value.values())
    if isinstance(value, list):
        return sum(_keys(v) for v in value)
    return 0


def _decode(content: str) -> tuple[bool, Any]:
    """``(True, value)`` when ``content`` is one JSON value with no duplicate key, else ``(False, None)``."""
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return False, None
    if "{" in content:
        # Strings hold no quote or backslash, so every quote pair is a string: count the keys.
        written = sum(1 for m in _KEY.finditer(content) if m.group(1))
        if written != _keys(value):
            return False, None
    return True, value


def _segments(contents: list[str]) -> list[tuple[int, int, list[Any]]]:
    """``(first, end, values)`` of the stretches of lines that decode (a bad line is left to YAML)."""
    try:
        values = [orjson.loads(c) for c in contents]
        if not any("{" in c for c in contents):
            return [(0, len(contents), values)]
    except orjson.JSONDecodeError:
        pass
    out: list[tuple[int, int, list[Any]]] = []
    first, values = 0, []
    for k, content in enumerate(contents):
        ok, value = _decode(content)
        if ok:
            values.append(value)
            continue
        if k - first >= MIN_RUN:
            out.append((first, k, values))
        first, values = k + 1, []
    if len(contents) - first >= MIN_RUN:
        out.append((first, len(contents), values))
    return out


def find_runs(text: str) -> Runs | None:
    """The text with each run of at least ``MIN_RUN`` JSON-style items as one placeholder, or None."""
    if "- [" not in text and "- {" not in text:
        return None
    placeholder = PLACEHOLDER
    while placeholder in text:
        placeholder += "-"
    runs = Runs("", placeholder)
    parts: list[str] = []
    pos = 0
    removed = 0  # lines dropped so far: the placeholder's line in the new text
    seen, seen_lines = 0, 0  # where lines have been counted up to, and how many
    for match in _RUN.finditer(text):
        block = match.group(0)
        lines = block.split("\n")
        if len(lines) < MIN_RUN:
            continue
        indent = match.group(1)
        cut = len(indent) + 2
        segments = _segments([line[cut:] for line in lines])
        if not segments:
            continue
        seen_lines += text.count("\n", seen, match.start())
        seen = match.start()
        starts = list(accumulate((len(line) + 1 for line in lines), initial=match.start()))
        for first, end, values in segments:
            begin, stop = starts[first], starts[end] - 1
            parts.append(text[pos:begin])
            parts.append(f"{indent}- {placeholder}")
            line = seen_lines + first - removed
            runs.items[line] = values
            removed += end - first - 1
            pos = stop
    if not runs.items:
        return None
    parts.append(text[pos:])
    runs.text = "".join(parts)
    return runs
