"""``pyrocluster submit`` refuses a value nested deeper than ``MAX_VALUE_DEPTH`` before anything
runs (exit 2, the place named), and runs one at the limit with its record written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyrocluster.jobs.nesting import MAX_VALUE_DEPTH
from tests.conftest import run_cli
from tests.helpers.deepvalues import mappings, nest

N = MAX_VALUE_DEPTH


def lists(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def spelled(depth: int) -> object:
    """``mappings(depth)`` as the results file writes it."""
    value: object = 1
    for _ in range(depth):
        value = {"1": value, "x": 2}
    return value


@pytest.mark.parametrize("mode", [["--ns", "127.0.0.1:1"], ["--dry-run"]])
@pytest.mark.parametrize("depth", [N + 1, 990])
def test_too_deep_a_value_is_exit_2_naming_its_place_and_runs_nothing(
    tmp_path: Path, mode: list[str], depth: int
) -> None:
    job = tmp_path / "deep.yaml"
    job.write_text(f"tasks:\n  - id: e\n    call: echo\n    args: [{lists(depth)}]\n")
    result = run_cli("submit", str(job), *mode, cwd=tmp_path)
    assert result.returncode == 2, result
    expected = f"error: {job}: tasks[0].args[0] (line 4): nested deeper than {N} levels"
    assert result.stderr.startswith(expected), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert not list(tmp_path.glob("*.jsonl"))


def test_values_at_the_limit_run_and_their_records_are_written(tmp_path: Path) -> None:
    job = tmp_path / "deep.yaml"
    job.write_text(
        "name: deep\ntasks:\n"
        f"  - id: lists\n    call: echo\n    args: [{lists(N)}]\n"
        f"  - id: keys\n    call: echo\n    kwargs: {{x: {mappings(N)}}}\n"
        f"  - id: m\n    call: echo\n    map:\n      - [{lists(N)}]\n      - {mappings(N)}\n"
    )
    result = run_cli("submit", str(job), "--local", "1", "--quiet", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result
    records = {}
    for line in (tmp_path / "deep.results.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record.get("id")] = record
    assert records["lists"]["status"] == "ok", records["lists"]
    assert records["lists"]["args"] == [nest(N)] and records["lists"]["result"] == nest(N)
    assert records["keys"]["status"] == "ok", records["keys"]
    assert records["keys"]["kwargs"] == {"x": spelled(N)} and records["keys"]["result"] == spelled(N)
    assert records["m-0"]["result"] == nest(N) and records["m-1"]["result"] == spelled(N)
