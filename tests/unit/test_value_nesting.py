"""Values nested deeper than every later stage handles are refused when the job file is loaded,
at their key path and line, instead of running and failing as ``NotRecordable``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyrocluster.errors import JobFileError
from pyrocluster.jobs import recordjson
from pyrocluster.jobs.nesting import MAX_VALUE_DEPTH, deeper_than, depth
from pyrocluster.jobs.spec import load_job
from tests.helpers.deepvalues import mappings, nest

N = MAX_VALUE_DEPTH


def lists(depth: int) -> str:
    """``[[...[1]...]]``: ``depth`` lists inside one another, in YAML flow style."""
    return "[" * depth + "1" + "]" * depth


def load_error(tmp_path: Path, text: str) -> JobFileError:
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(JobFileError) as info:
        load_job(path)
    assert str(info.value).startswith(f"{path}: "), str(info.value)
    assert "\n" not in str(info.value), str(info.value)  # one line
    return info.value


def task(body: str) -> str:
    return "tasks:\n  - id: t\n    call: echo\n" + body


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (task(f"    args: [{lists(N + 1)}]\n"), "tasks[0].args[0] (line 4)"),
        (task(f"    args: [1, {lists(990)}]\n"), "tasks[0].args[1] (line 4)"),  # the report's file
        (task(f"    args: [{mappings(N + 1)}]\n"), "tasks[0].args[0] (line 4)"),
        (task(f"    kwargs:\n      ok: 1\n      deep: {lists(N + 1)}\n"), "tasks[0].kwargs.deep (line 6)"),
        (task(f"    map:\n      - [1]\n      - [{lists(N + 1)}]\n"), "tasks[0].map[1] (line 6)"),
        (task(f"    map:\n      - 1\n      - {mappings(N + 1)}\n"), "tasks[0].map[1] (line 6)"),
        (task(f"    args: [1]\n    on_success: {{call: echo, args: [{lists(N + 1)}]}}\n"),
         "tasks[0].on_success.args[0] (line 5)"),
        (task("    args: [1]\n") + f"on_failure:\n  call: echo\n  kwargs: {{x: {lists(N + 1)}}}\n",
         "on_failure.kwargs.x (line 7)"),
        (f"defaults:\n  on_success: {{call: echo, args: [{lists(N + 1)}]}}\n" + task("    args: [1]\n"),
         "defaults.on_success.args[0] (line 2)"),
    ],
)  # fmt: skip
def test_a_value_nested_too_deep_is_refused_at_its_place(tmp_path: Path, text: str, where: str) -> None:
    exc = load_error(tmp_path, text)
    assert exc.where == where, str(exc)
    assert exc.message.startswith(f"nested deeper than {N} levels"), str(exc)


def test_values_at_the_limit_load_and_can_be_recorded(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        task(
            f"    args: [{lists(N)}, {mappings(N)}]\n    kwargs: {{k: {lists(N)}}}\n"
            f"  - id: m\n    call: echo\n    map:\n      - [{lists(N)}]\n"
        )
    )
    spec = load_job(path)  # a map's list item is a call's arguments: each may be N deep
    assert spec.tasks[0].args[0] == nest(N) and spec.tasks[1].map == [[nest(N)]]
    # Deeper than orjson writes (254): the careful path, from a stack a runner may hold.
    line = recordjson.encode_record({"id": "t", "args": spec.tasks[0].args, "result": spec.tasks[0].args})
    assert json.loads(line)["result"][0] == nest(N)


def test_a_deep_value_made_of_aliases_is_refused(tmp_path: Path) -> None:
    # Each argument holds the one before it: a short file, and a value 1,000 levels deep.
    chain = ", ".join(["&a0 [1]", *(f"&a{i} [*a{i - 1}]" for i in range(1, 1000))])
    exc = load_error(tmp_path, task(f"    args: [{chain}]\n"))
    assert exc.where == f"tasks[0].args[{N}] (line 4)", str(exc)


def test_a_deep_json_style_map_item_is_refused_not_a_crash(tmp_path: Path) -> None:
    # Sixteen or more ``- [...]`` lines are read by orjson (jsonruns), whose key count recurses.
    deep = '{"a": ' * 600 + "1" + "}" * 600
    items = "".join(f"      - [{i}]\n" for i in range(20)) + f"      - [{deep}]\n"
    exc = load_error(tmp_path, task("    map:\n" + items))
    assert exc.where == "line 25" and exc.message.startswith(f"nested deeper than {N} levels"), str(exc)


def test_a_deep_json_style_run_item_is_named(tmp_path: Path) -> None:
    items = "".join(f"      - [{i}]\n" for i in range(20)) + f"      - [{lists(N + 1)}]\n"
    exc = load_error(tmp_path, task("    map:\n" + items))
    assert exc.where == "tasks[0].map[20] (line 25)", str(exc)


def test_deeper_than_counts_levels_of_lists_and_mappings() -> None:
    assert depth(5, 1, "x") == 0 and depth(5, [1], {"a": [2]}) == 2 and depth(5, nest(9)) == 6
    assert not deeper_than(0, 1, "text", None)
    assert deeper_than(0, [1]) and not deeper_than(1, [1])
    assert deeper_than(2, {"a": [{"b": 1}]}) and not deeper_than(3, {"a": [{"b": 1}]})
    assert not deeper_than(N, nest(N)) and deeper_than(N, nest(N + 1))
    assert deeper_than(N, 1, [2], nest(N + 1), "x")  # any of several values
    shared = nest(10)
    wide = [shared] * 1000
    for _ in range(5):
        wide = [wide, wide]  # shared, not copied: each level walked once per use, and bounded
    assert not deeper_than(N, wide) and deeper_than(10, wide)
