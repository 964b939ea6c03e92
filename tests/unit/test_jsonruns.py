"""Runs of JSON-style items read by orjson: exactly what the YAML path gives, errors and lines included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrocluster.errors import JobFileError
from pyrocluster.jobs import jsonruns, yamlread
from pyrocluster.jobs.spec import load_job

GOOD = "[7, 8]"
PAD = jsonruns.MIN_RUN + 4


def yaml_path(text: str) -> tuple[str, str]:
    """What the reader gave before runs existed: ("value", repr) or ("error", type and message)."""
    try:
        try:
            return "value", repr(yamlread._from_events(text, None))
        except yamlread._Slow:
            return "value", repr(yaml.load(text, Loader=yamlread._Loader))
    except yaml.YAMLError as exc:
        return "error", f"{type(exc).__name__}: {exc}"


def read(text: str) -> tuple[str, str]:
    try:
        return "value", repr(yamlread.read_yaml(text))
    except yaml.YAMLError as exc:
        return "error", f"{type(exc).__name__}: {exc}"


def assert_same(text: str) -> bool:
    """read_yaml agrees with the YAML path, and so does the fast path itself when it goes through.

    Returns whether the fast path went through (found runs and spliced them without falling back).
    """
    expected = yaml_path(text)
    assert read(text) == expected, text
    runs = jsonruns.find_runs(text)
    if runs is None:
        return False
    try:
        fast = yamlread._from_events(runs.text, runs)
    except (yamlread._Slow, yamlread._Moved, yaml.YAMLError):
        return False
    assert ("value", repr(fast)) == expected, text
    return True


def run_of(*lines: str, indent: str = "  ") -> str:
    return "items:\n" + "".join(f"{indent}- {line}\n" for line in lines)


TRICKY = [
    GOOD,
    "[1,2]",
    "[ 1 , 2 ]",
    "[1, 2]   ",
    "[1, 2]\t",
    "[1, 2] # a comment",
    "[1, 2] #",
    '["#not a comment", "a: b", "[x]", "{y}", "- z", "&a", "*a", "!t", "%", "@", "`"]',
    "[]",
    "{}",
    "[[[]], {}]",
    "[true, false, null]",
    "[True, FALSE, Null, yes, no, on, off, ~]",
    "[a, b]",
    "[-0]",
    "[0]",
    "[-0.0, 0.0, -1.5, 0.1, 1.0000000000000]",
    "[0.30000000000000004]",
    "[1.0000000000000002]",
    "[123456789.123456]",
    "[1e3]",
    "[1E3]",
    "[1.5e3]",
    "[1.5e+3]",
    "[1.5E-3]",
    "[01]",
    "[00]",
    "[0x1F, 0o7, 0b1]",
    "[1_000]",
    "[+5]",
    "[.5]",
    "[5.]",
    "[1:30]",
    "[.inf, -.inf, .nan, NaN, Infinity]",
    "[999999999999999999]",
    "[-999999999999999999]",
    "[9223372036854775807]",
    "[9223372036854775808]",
    "[18446744073709551616]",
    "[123456789012345678901234567890]",
    '["plain ascii ~ !"]',
    '["a\\nb"]',
    '["\\u00e9"]',
    '["\\/"]',
    '["\\ud83d\\ude00"]',
    '["\\ud83d"]',
    '["\\x41"]',
    '["\\e\\N\\_\\L\\P"]',
    '["\\ "]',
    '["é", "日本"]',
    '["a\u2028b"]',
    '["a\u0085b"]',
    '["tab\there"]',
    '["\ufeff"]',
    "['single']",
    '["2001-01-01", 2001-01-01]',
    '["<<"]',
    '{"<<": {"a": 1}}',
    '{"a": 1}',
    '{"a":1}',
    '{"a" : 1}',
    '{"a": 1, "a": 2}',
    '{"a": 1, "b": {"c": 1, "c": 2}}',
    '{"a": [1, {"b": 2, "b": 3}]}',
    '[{"a": 1}, {"a": 2}]',
    '{"k": "v", ":": 1}',
    '{"k": ":", "k": 1}',
    '{"a": {"a": {"a": 1}}}',
    '{"1": 2, "true": 3, "null": 4}',
    "{a: 1}",
    '{"a"}',
    '{"a", "b": 1}',
    "[1, 2, ]",
    "[1 2]",
    "[1], [2]",
    "[1] [2]",
    "[1]: 2",
    "[1] : 2",
    '["a": 1]',
    "[[1], [2]",
    "[1]]",
    "{]",
    "&x [1]",
    "!!str [1]",
    "!!seq [1]",
    jsonruns.PLACEHOLDER,
    f"[{jsonruns.PLACEHOLDER}]",
    f'["{jsonruns.PLACEHOLDER}"]',
]


@pytest.mark.parametrize("line", TRICKY)
def test_a_tricky_line_amid_a_run(line: str) -> None:
    assert_same(run_of(*[GOOD] * PAD, line, *[GOOD] * PAD))


@pytest.mark.parametrize("line", TRICKY)
def test_a_run_of_tricky_lines(line: str) -> None:
    assert_same(run_of(*[line] * PAD))


def test_the_fast_path_is_taken_for_json_lines() -> None:
    lines = [f'[{i}, {-i}, {i}.5, "s{i}", true, null, {{"k": [{i}]}}]' for i in range(100)]
    assert assert_same(run_of(*lines))
    assert assert_same(run_of(*[GOOD] * PAD, "[1e3]", *[GOOD] * PAD))  # the rest still goes fast
    runs = jsonruns.find_runs(run_of(*[GOOD] * PAD, "[1e3]", *[GOOD] * PAD))
    assert runs is not None and sorted(runs.items) == [1, 3]


@pytest.mark.parametrize(
    "text",
    [
        # Not block-sequence items at all: the placeholder does not land as one.
        "k: |\n" + "".join(f"  - [{i}]\n" for i in range(PAD)),
        "k: >\n" + "".join(f"  - [{i}]\n" for i in range(PAD)),
        'k: "start\n' + "".join(f"  - [{i}]\n" for i in range(PAD)) + '  end"\n',
        "k: [\n" + "".join(f"  - [{i}]\n" for i in range(PAD)) + "]\n",
        "k: plain\n" + "".join(f"  - [{i}]\n" for i in range(PAD)),
        "k: 'single\n" + "".join(f"  - [{i}]\n" for i in range(PAD)) + "  end'\n",
        "# comment\n" + "".join(f"# - [{i}]\n" for i in range(PAD)),
        # Items, followed by something the run cannot be.
        run_of(*[GOOD] * PAD) + "    more\n",
        run_of(*[GOOD] * PAD) + "\n    more\n",
        run_of(*[GOOD] * PAD) + "  : x\n",
        run_of(*[GOOD] * PAD) + "  - [1]: 2\n",
        run_of(*[GOOD] * PAD) + "bad: [\n",
        run_of(*[GOOD] * PAD) + "items: again\n",
        run_of(*[GOOD] * PAD) + "other: !!binary aGVsbG8=\n",
        run_of(*[GOOD] * PAD) + "---\nsecond: doc\n",
        # Other shapes of sequence.
        "".join(f"- [{i}]\n" for i in range(PAD)),
        "k:\n" + "".join(f"- [{i}]\n" for i in range(PAD)),
        "k:\n" + "".join(f"  - - [{i}]\n" for i in range(PAD)),
        "k: &m\n" + "".join(f"  - [{i}]\n" for i in range(PAD)) + "j: *m\n",
        "k:\n" + "".join(f"  - [{i}]\n" if i % 2 else f"    - [{i}]\n" for i in range(2 * PAD)),
        "a:\n"
        + "".join(f"  - [{i}]\n" for i in range(PAD))
        + "b:\n"
        + "".join("  - {}\n" for _ in range(PAD)),
        "k:\n"
        + "".join(f"  - [{i}]\n" for i in range(PAD))
        + "  - {a: 1}\n"
        + "".join(f"  - [{i}]\n" for i in range(PAD)),
        run_of(*[GOOD] * PAD).replace("\n", "\r\n"),
        run_of(*[GOOD] * PAD) + jsonruns.PLACEHOLDER + ": 1\n",
        run_of(*[GOOD] * PAD).rstrip("\n"),
    ],
)
def test_runs_in_every_context(text: str) -> None:
    assert_same(text)


def test_yaml_errors_name_the_line_of_the_original_text() -> None:
    text = run_of(*[GOOD] * 50) + "bad: [\n"
    kind, message = read(text)
    assert kind == "error" and "line 53, column 1" in message, message  # the end, after "bad: ["
    assert (kind, message) == yaml_path(text)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_json, min_size=1, max_size=6),
    st.sampled_from([(", ", ": "), (",", ":"), (" , ", " : ")]),
    st.booleans(),
)
def test_json_lines_read_as_yaml_reads_them(
    values: list[Any], separators: tuple[str, str], ascii_only: bool
) -> None:
    lines = [json.dumps([v], separators=separators, ensure_ascii=ascii_only) for v in values]
    assert_same(run_of(*[GOOD] * PAD, *lines, *[GOOD] * PAD))
    assert_same(run_of(*(lines * PAD)))


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="[]{},:\" 0123456789.-+eE#&*!\\tnulfasx\t'", max_size=16))
def test_any_line_reads_as_yaml_reads_it(line: str) -> None:
    assert_same(run_of(*[GOOD] * PAD, "[" + line, *[GOOD] * PAD))
    assert_same(run_of(*["[" + line] * PAD))


def test_a_validation_error_in_a_fast_list_names_its_line(tmp_path: Path) -> None:
    tasks = [f'{{"id": "t{i}", "call": "add", "args": [{i}, {i}]}}' for i in range(300)]
    tasks[250] = '{"id": "t250", "call": "add", "argz": [1]}'
    text = "name: big\ntasks:\n" + "".join(f"  - {t}\n" for t in tasks)
    assert jsonruns.find_runs(text) is not None
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(JobFileError) as info:
        load_job(path)
    assert info.value.where == "tasks[250].argz (line 253)", str(info.value)
    assert "unknown key 'argz'" in info.value.message


def test_a_big_fast_map_loads_every_item(tmp_path: Path) -> None:
    text = "name: m\ntasks:\n  - id: add\n    call: add\n    map:\n" + "".join(
        f"      - [{i}, {i}]\n" for i in range(5000)
    )
    assert assert_same(text)
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_job(path).tasks[0].map == [[i, i] for i in range(5000)]
