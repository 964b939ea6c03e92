"""The run file beside a results file: who wrote it and whether the run finished (files only)."""

from __future__ import annotations

import pytest

from pyrocluster.errors import ConfigError
from pyrocluster.jobs import runfile


def test_unfinished_run_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "a.results.jsonl"
    runfile.check_start(out, "a", resume=False, overwrite=False)  # nothing there yet
    out.write_text('{"id": "x"}\n')
    with pytest.raises(ConfigError, match="unfinished run: continue it with --resume, or replace it with"):
        runfile.check_start(out, "a", resume=False, overwrite=False)  # no run file: cannot tell, keep it
    runfile.mark(out, "a", finished=False)
    with pytest.raises(ConfigError, match="unfinished run of job 'a'"):
        runfile.check_start(out, "a", resume=False, overwrite=False)
    runfile.check_start(out, "a", resume=False, overwrite=True)
    runfile.check_start(out, "a", resume=True, overwrite=False)
    runfile.mark(out, "a", finished=True)
    runfile.check_start(out, "a", resume=False, overwrite=False)
    assert runfile.read_marker(out) == {"job": "a", "finished": True}


def test_resume_refuses_another_jobs_file(tmp_path):
    out = tmp_path / "a.results.jsonl"
    out.write_text('{"id": "x"}\n')
    runfile.mark(out, "a", finished=True)
    with pytest.raises(ConfigError, match="holds the results of job 'a', not 'b'"):
        runfile.check_start(out, "b", resume=True, overwrite=False)
