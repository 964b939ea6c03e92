"""The job reader's event fast path (yamlread) against the PyYAML loader it stands for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyrocluster.jobs import yamlread
from pyrocluster.jobs.spec import JobFileError, load_job
from tests.conftest import run_cli


def outcome(read: Any, text: str) -> tuple[str, str]:
    """("value", repr) or ("error", type and message); repr shows NaN and a list that holds itself."""
    try:
        return "value", repr(read(text))
    except yaml.YAMLError as exc:
        return "error", f"{type(exc).__name__}: {exc}"


def loader(text: str) -> Any:
    return yaml.load(text, Loader=yamlread._Loader)  # noqa: S506 - a safe loader


def assert_as_pyyaml(text: str) -> None:
    assert outcome(yamlread.read_yaml, text) == outcome(loader, text), text


@pytest.mark.parametrize(
    "text",
    [
        "- &a 1\n- &a 2\n- *a\n",  # a duplicate anchor: PyYAML refuses it
        "a: &x [1]\nb: &x {c: 2}\nd: *x\n",
        "{yes: a, true: b}\n",  # keys written differently are not duplicates, though equal
        "{1: a, 1.0: b}\n",
        "{~: a, null: b}\n",
        "x: !!str 1\ny: {yes: a, true: b}\n",  # and the same with an unrelated tag before
        "x: !!str 1\ny: {1: a, 1.0: b}\n",
        "{a: 1, 'a': 2}\n",  # written alike: duplicates
        "{1: a, '1': b}\n",
        "a: 1\nb: 2\na: 3\n",
        "n: " + "1" * 5000 + "\n",  # more digits than int() takes
        "n: [1, -" + "2" * 4301 + "]\n",
        "n: 1:" + "3" * 4400 + "\n",
    ],
)
def test_the_fast_path_behaves_as_the_loader(text: str) -> None:
    assert_as_pyyaml(text)


def test_an_integer_over_the_digit_limit_is_a_job_file_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("tasks:\n  - call: add\n    args: [1, " + "9" * 5000 + "]\n")
    with pytest.raises(JobFileError, match="line 3, column 15.*an integer of 5000 characters"):
        load_job(path)
    result = run_cli("submit", str(path), "--ns", "127.0.0.1:1", cwd=tmp_path)
    assert result.returncode == 2, result
    assert (
        "line 3" in result.stderr and "Traceback" not in result.stderr and "unexpected" not in result.stderr
    )


SCALARS = [
    "yes", "Yes", "true", "True", "on", "no", "false", "off", "1", "01", "1.0", "1e3", "0x1", "0o1",
    "+1", "1_0", "1:30", "~", "null", "Null", "", "'1'", '"1"', "a", "'a'", "b", ".inf", ".NaN",
    "-.inf", "2001-01-01", "'yes'", "!!str 1", "!!int '3'", "<<",
]  # fmt: skip
scalar = st.sampled_from(SCALARS)
anchor = st.sampled_from(["", "", "", "&a ", "&b "])


@st.composite
def flow(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(st.sampled_from(["scalar", "scalar", "alias", "list", "map"] if depth < 3 else ["scalar"]))
    if kind == "scalar":
        return draw(anchor) + draw(scalar)
    if kind == "alias":
        return draw(st.sampled_from(["*a", "*b"]))
    items = draw(st.lists(flow(depth + 1), max_size=4))
    if kind == "list":
        return draw(anchor) + "[" + ", ".join(items) + "]"
    keys = draw(st.lists(scalar, min_size=len(items), max_size=len(items)))
    return draw(anchor) + "{" + ", ".join(f"{k}: {v}" for k, v in zip(keys, items, strict=True)) + "}"


@st.composite
def documents(draw: st.DrawFn) -> str:
    lines = [f"{draw(scalar)}: {draw(flow())}" for _ in range(draw(st.integers(1, 5)))]
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), "x: !!str 1")
    return "\n".join(lines) + "\n"


@settings(max_examples=200, deadline=None)
@given(documents())
@example("k: - &a 1\n")
@example("a: &a 1\nb: &a 2\nc: *a\n")
@example("x: !!str 1\nk: {yes: a, true: b}\n")
def test_generated_job_files_read_as_pyyaml_reads_them(text: str) -> None:
    assert_as_pyyaml(text)
