"""``pyrocluster results FILE [--failed] [--json]`` on results files written by hand (no cluster needed)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli

OK = {"id": "answer", "kind": "compute", "call": "add", "status": "ok", "result": 42, "worker": "wa",
      "attempts": 1, "elapsed_ms": 2.0}  # fmt: skip
TRACEBACK = 'Traceback (most recent call last):\n  File "t.py", line 3, in fail\nRuntimeError: boom\n'
FAILED = {"id": "broken", "kind": "compute", "call": "fail", "status": "failed", "worker": "wb",
          "attempts": 2, "elapsed_ms": 4.0,
          "error": {"type": "RuntimeError", "message": "boom", "traceback": TRACEBACK}}  # fmt: skip


def write(path: Path, *records: dict, tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


def test_summary_lists_failures_and_failed_shows_tracebacks(tmp_path):
    first_try = {**OK, "id": "broken", "status": "failed", "error": {"type": "X", "message": "old"}}
    where = tmp_path / ("a-long-directory-name-" * 3)  # a long path must not wrap the title line
    where.mkdir()
    path = write(where / "r.jsonl", first_try, OK, FAILED)
    (where / "r.jsonl.run.json").write_text('{"job": "demo", "finished": true}')
    result = run_cli("results", str(path))
    assert result.returncode == 0, result
    assert f"{path} (job demo)" in result.stdout and "RuntimeError: boom" in result.stdout
    assert "Traceback" not in result.stdout and "old" not in result.stdout  # the later line wins
    result = run_cli("results", str(path), "--failed")
    assert result.returncode == 0, result
    assert (
        'File "t.py", line 3, in fail' in result.stdout
        and "broken (fail on wb, 2 attempt(s))" in result.stdout
    )
    data = json.loads(run_cli("results", str(path), "--json").stdout)
    assert (data["job"], data["finished"], data["total"], data["ok"], data["failed"], data["retried"]) == (
        "demo", True, 2, 1, 1, 1
    )  # fmt: skip
    assert data["workers"] == {"wa": 1} and "failures" not in data
    data = json.loads(run_cli("results", str(path), "--json", "--failed").stdout)
    assert [f["id"] for f in data["failures"]] == ["broken"]


def test_torn_last_line_is_tolerated_but_a_bad_middle_line_is_exit_2(tmp_path):
    torn = write(tmp_path / "torn.jsonl", OK, tail='{"id": "half')
    result = run_cli("results", str(torn), "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["total"] == 1
    bad = write(tmp_path / "bad.jsonl", OK, tail="not json\n" + json.dumps(FAILED) + "\n")
    result = run_cli("results", str(bad))
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"error: {bad}:2: not a results record")


def test_missing_file_is_exit_2(tmp_path):
    result = run_cli("results", str(tmp_path / "nope.jsonl"))
    assert (
        result.returncode == 2
        and result.stderr.strip() == f"error: {tmp_path / 'nope.jsonl'}: no such results file"
    )
