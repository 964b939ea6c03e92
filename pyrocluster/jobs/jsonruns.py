"""Long runs of JSON-style block-sequence items (``- [1, 2]``) read by orjson instead of the YAML parser.

A 20,000-item ``map`` written one ``- [i, i]`` per line makes PyYAML emit 80,000 event objects
(0.33 s); orjson decodes the same lines in about 0.02 s. :func:`find_runs` replaces each run of
such lines by one placeholder item, and the YAML reader splices the decoded items in where the
placeholder lands (it checks that it landed as an item of a block sequence, on the line expected,
else it reads the original text instead, whose errors and line numbers are then the ones shown).

A line takes this path only when YAML and JSON cannot read it differently. The grammar allowed is
a strict subset of both, which gives the same values in both:

- strings of printable ASCII with no backslash (so no escape, which JSON and YAML treat apart,
  and no character YAML 1.1 reads as a line break);
- integers of at most 18 digits (an int64 in both; ``-0`` is 0 in both);
- decimals with a dot, no exponent, at most 15 digits (PyYAML reads ``1e3`` as a string; 15
  digits divided by a power of ten round the same way in any correct parser);
- ``true``, ``false``, ``null``; ``[ ] { } , :`` and spaces (no tabs, comments, anchors, aliases,
  tags or plain strings);
- each line exactly one JSON value, and no duplicate key in an object (YAML refuses those).

A block of such lines is first checked at C speed (:func:`_plain`: the characters, and no number
over 15 characters); only a block that fails it is matched token by token (``_RUN``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
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
_CANDIDATE = re.compile(r"^( *)- [\[{][^\n]*(?:\n\1- [\[{][^\n]*)*", re.MULTILINE)
_STRING = re.compile(r'"[ !#-\[\]-~]*"')
_PLAIN_CHARS = str.maketrans("", "", "0123456789 ,:[]{}.-\n")
_NUMBER_CHARS = str.maketrans("0123456789.", "n" * 11)
_LONG_NUMBER = "n" * 16


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


def _segments(contents: list[str], curly: bool) -> list[tuple[int, int, list[Any]]]:
    """``(first, end, values)`` of the stretches of lines that decode (a bad line is left to YAML);
    ``curly``: some line holds an object (its keys are checked)."""
    if not curly:
        try:
            return [(0, len(contents), list(map(orjson.loads, contents)))]
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


def _plain(block: str) -> bool:
    """True when every line of ``block`` is within the grammar, checked at C speed for the usual case:
    no character outside strings but digits, spaces, ``[]{},:.-`` and the three literals, and no
    number of more than 15 characters (``_RUN`` judges the other blocks token by token)."""
    if '"' in block:
        block = _STRING.sub("", block)
    if "e" in block or "l" in block:
        block = block.replace("true", "").replace("false", "").replace("null", "")
    return not block.translate(_PLAIN_CHARS) and _LONG_NUMBER not in block.translate(_NUMBER_CHARS)


def _blocks(text: str) -> Iterator[tuple[int, str, str]]:
    """``(start, indent, block)`` of each run of item lines in ``text`` that keeps to the grammar."""
    for candidate in _CANDIDATE.finditer(text):
        block = candidate.group(0)
        if block.count("\n") + 1 < MIN_RUN:
            continue
        if _plain(block):
            yield candidate.start(), candidate.group(1), block
            continue
        for match in _RUN.finditer(text, candidate.start(), candidate.end()):
            yield match.start(), match.group(1), match.group(0)


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
    for start, indent, block in _blocks(text):
        prefix = indent + "- "
        contents = block[len(prefix) :].replace("\n" + prefix, "\n").split("\n")
        if len(contents) < MIN_RUN:
            continue
        segments = _segments(contents, "{" in block)
        if not segments:
            continue
        seen_lines += text.count("\n", seen, start)
        seen = start
        if len(segments) == 1 and segments[0][:2] == (0, len(contents)):  # the whole block, as usual
            line_starts = {0: start, len(contents): start + len(block) + 1}
        else:
            lengths = (len(prefix) + len(c) + 1 for c in contents)
            line_starts = dict(enumerate(accumulate(lengths, initial=start)))
        for first, end, values in segments:
            begin, stop = line_starts[first], line_starts[end] - 1
            parts.append(text[pos:begin])
            parts.append(f"{prefix}{placeholder}")
            line = seen_lines + first - removed
            runs.items[line] = values
            removed += end - first - 1
            pos = stop
    if not runs.items:
        return None
    parts.append(text[pos:])
    runs.text = "".join(parts)
    return runs
