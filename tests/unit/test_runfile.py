"""The run file beside a results file: who wrote it and whether the run finished (files only)."""

from __future__ import annotations

import pytest

from pyrocluster.errors import ConfigError
from pyrocluster.jobs import runfile
from pyrocluster.jobs.jobids import JobIds
from pyrocluster.jobs.spec import load_job


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


def test_job_ids_are_its_tasks_map_items_callbacks_and_crawl_pages(tmp_path):
    job = tmp_path / "j.yaml"
    job.write_text(
        "defaults: {on_failure: {call: alert}}\n"
        "tasks:\n"
        "  - {id: a, call: echo}\n"
        "  - {id: s, call: add, map: [[1, 1], [2, 2]], on_failure: null, on_success: {call: echo}}\n"
        "  - {id: d, call: add, map: {$result: a}}\n"
        "  - {id: s-7, call: echo}\n"
        "on_success: {call: echo}\n"
        "crawl: {seeds: ['http://127.0.0.1:1/']}\n"
    )
    ids = JobIds(load_job(job))
    own = ["a", "s-0", "s-1", "s-7", "d", "d-0", "d-12", "a:on_failure", "s-1:on_success", "d-3:on_failure"]
    own += ["job:on_success", "crawl:http://127.0.0.1:1/x"]
    assert [key for key in own if key not in ids] == []
    foreign = [
        "b",
        "s",
        "s-2",
        "s-01",
        "d-x",
        "a:on_success",
        "s-0:on_failure",
        "b:on_failure",
        "job:on_failure",
    ]
    assert [key for key in foreign if key in ids] == []
    job.write_text("tasks:\n  - {id: a, call: echo}\n")
    assert "crawl:http://127.0.0.1:1/x" not in JobIds(load_job(job))


def test_resume_without_a_run_file_refuses_a_file_with_an_id_the_job_never_writes(tmp_path):
    out = tmp_path / "a.results.jsonl"
    out.write_text('{"id": "x"}\n\n{"id": "y"}\n{"id": "z", "st')  # a torn last line is passed over
    runfile.check_start(out, "a", resume=True, overwrite=False, ids={"x", "y"})
    with pytest.raises(ConfigError, match=r"line 3 has id 'y', which this job never writes .*no a\.results"):
        runfile.check_start(out, "a", resume=True, overwrite=False, ids={"x"})
    out.write_text('{"id": "y"}\nnot a record\n{"id": "x"}\n')  # damage: the store's read says so
    runfile.check_start(out, "a", resume=True, overwrite=False, ids={"x"})
    out.write_text('{"id": "y"}\n')
    runfile.mark(out, "a", finished=False)  # the run file says whose it is
    runfile.check_start(out, "a", resume=True, overwrite=False, ids={"x"})
