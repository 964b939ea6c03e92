"""The schedules file: defaults, and one error naming the file, key path and line for each problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrocluster.errors import JobFileError
from pyrocluster.scheduler.spec import load_schedules, parse_duration
from pyrocluster.scheduler.ticks import Cron, Every

JOB = "name: j\ntasks:\n  - call: add\n    args: [1, 2]\n"


def write(tmp_path: Path, text: str, job: str | None = JOB) -> Path:
    if job is not None:
        (tmp_path / "job.yaml").write_text(job)
    path = tmp_path / "schedules.yaml"
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(JobFileError) as info:
        load_schedules(path)
    return str(info.value)


def test_defaults_and_relative_job_path(tmp_path):
    (schedule,) = load_schedules(
        write(tmp_path, "schedules:\n  - name: a\n    job: job.yaml\n    every: 30s\n")
    )
    assert schedule.timing == Every(30)
    assert (schedule.misfire, schedule.catchup_s, schedule.overlap) == ("once", 3600.0, "skip")
    assert schedule.job_path == tmp_path / "job.yaml" and schedule.job.name == "j"
    assert schedule.output_for("20261201T030000Z") == "runs/a/20261201T030000Z.results.jsonl"
    assert str(schedule.ticks_log()) == "runs/a/ticks.jsonl"


def test_cron_with_zone_and_policies(tmp_path):
    text = (
        "schedules:\n  - name: nightly\n    job: job.yaml\n    cron: '0 3 * * *'\n"
        "    timezone: Europe/Berlin\n    misfire: all\n    catchup: 2h\n    overlap: queue\n"
        "    output: out/{name}-{fire}.jsonl\n"
    )
    (schedule,) = load_schedules(write(tmp_path, text))
    assert isinstance(schedule.timing, Cron) and str(schedule.timing.zone) == "Europe/Berlin"
    assert (schedule.misfire, schedule.catchup_s, schedule.overlap) == ("all", 7200.0, "queue")
    assert schedule.output_for("X") == "out/nightly-X.jsonl"


def test_durations():
    assert parse_duration("30s") == 30 and parse_duration("5m") == 300 and parse_duration("2h") == 7200
    assert parse_duration("1h30m") == 5400 and parse_duration(10) == 10
    for bad in ("soon", "", "5 x", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "    cron: '61 * * * *'\n",
            "schedules.yaml: schedules[0].cron (line 4): bad cron expression '61 * * * *'",
        ),
        (
            "    cron: '0 3 * *'\n",
            "schedules[0].cron (line 4): bad cron expression '0 3 * *': expected 5 fields",
        ),
        (
            "    every: 10s\n    timezone: Mars/Olympus\n",
            "schedules[0].timezone (line 5): unknown time zone 'Mars/Olympus'",
        ),
        (
            "    every: 10s\n    cron: '* * * * *'\n",
            "schedules[0] (line 2): give either 'cron' or 'every', not both",
        ),
        ("    misfire: once\n", "schedules[0] (line 2): give 'cron' or 'every'"),
        ("    every: soon\n", "schedules[0].every (line 4): expected a duration such as 30s"),
        ("    every: 1500ms\n", "schedules[0].every (line 4): expected a duration"),
        ("    every: 10s\n    misfire: twice\n", "schedules[0].misfire (line 5): "),
        (
            "    every: 10s\n    overlaps: skip\n",
            "schedules[0].overlaps (line 5): unknown key 'overlaps' (did you mean 'overlap'?)",
        ),
        (
            "    every: 10s\n    output: runs/{job}.jsonl\n",
            "schedules[0].output (line 5): unknown placeholder {job}",
        ),
        (
            "    every: 10s\n    output: runs/{name}.jsonl\n",
            "schedules[0].output (line 5): 'runs/{name}.jsonl' must contain {fire}",
        ),
        ("    every: 3000000d\n", "schedules[0].every (line 4): a duration may be at most 3660d"),
        ("    every: 99999999999999999999d\n", "schedules[0].every (line 4): a duration may be at most"),
        ("    every: 10s\n    catchup: 100000000d\n", "schedules[0].catchup (line 5): a duration may be"),
        ("    every: 10s\n    catchup: 0\n", "schedules[0].catchup (line 5): must be at least 1s"),
    ],
)
def test_invalid_schedules_name_key_path_and_line(tmp_path, body, expected):
    message = error_of(write(tmp_path, "schedules:\n  - name: a\n    job: job.yaml\n" + body))
    assert expected in message, message
    assert "\n" not in message


def test_missing_job_file_names_the_schedule_key(tmp_path):
    message = error_of(
        write(tmp_path, "schedules:\n  - name: a\n    job: nope.yaml\n    every: 10s\n", job=None)
    )
    assert message.startswith(
        f"{tmp_path / 'schedules.yaml'}: schedules[0].job (line 3): no such job file"
    ), message
    assert "nope.yaml" in message


def test_invalid_job_names_both_files(tmp_path):
    path = write(
        tmp_path,
        "schedules:\n  - name: a\n    job: job.yaml\n    every: 10s\n",
        job="tasks:\n  - args: [1]\n",
    )
    message = error_of(path)
    assert "schedules[0].job (line 3): invalid job" in message, message
    assert "job.yaml: tasks[0].call (line 2): missing required key 'call'" in message, message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("schedules: []\n", "schedules (line 1): must not be empty"),
        ("schedule: []\n", "schedules (line 1): missing required key 'schedules'"),
        (
            "schedules: [{name: a, job: job.yaml, every: 1s}]\nschedule: 1\n",
            "unknown key 'schedule' (did you mean 'schedules'?)",
        ),
        (
            "schedules:\n  - job: job.yaml\n    every: 1s\n",
            "schedules[0].name (line 2): missing required key 'name'",
        ),
        ("schedules:\n  - name: a.b\n    job: job.yaml\n    every: 1s\n", "schedules[0].name (line 2)"),
        (
            "schedules:\n  - {name: a, job: job.yaml, every: 1s}\n  - {name: a, job: job.yaml, every: 2s}\n",
            "schedules[1].name (line 3): duplicate name 'a' (also schedules[0])",
        ),
    ],
)
def test_invalid_file_shapes(tmp_path, text, expected):
    message = error_of(write(tmp_path, text))
    assert expected in message, message


def test_a_state_file_keeps_only_entries_whose_tick_is_a_time_and_says_when_it_cannot_be_written(tmp_path):
    from pyrocluster.scheduler.journal import StateFile

    state = StateFile(tmp_path / "s.json")
    (tmp_path / "s.json").write_text(
        '{"schedules": {"a": {"tick": "notatime"}, "b": {"tick": "2026-12-07T10:00:00Z", "status": "ok"}}}'
    )
    assert state.load() == {"b": {"tick": "2026-12-07T10:00:00Z", "status": "ok"}}
    state.check()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.json.lock"]
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OSError):
        StateFile(tmp_path / "a-file" / "s.json").check()
