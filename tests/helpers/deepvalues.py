"""Values nested to a given depth, for the tests of how deep a job file's values may go."""

from __future__ import annotations


def mappings(depth: int) -> str:
    """``{1: {1: ... 1 ..., x: 2}, x: 2}`` as YAML flow text: mappings with an int and a string
    key (the record path that spells the keys itself, two Python frames a level)."""
    return "{1: " * depth + "1" + ", x: 2}" * depth


def nest(depth: int) -> list[object]:
    """``[[...[1]...]]``, ``depth`` lists deep."""
    value: list[object] = [1]
    for _ in range(depth - 1):
        value = [value]
    return value
