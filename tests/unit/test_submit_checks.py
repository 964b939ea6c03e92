"""The checks ``submit`` makes against the live workers: each problem names its place and line,
and the job file is read again only to find the line of a problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pyrocluster.errors import JobFileError
from pyrocluster.jobs.spec import JobSpec, load_job
from pyrocluster.jobs.submit import check_resources, check_task_names, checks_pass
from pyrocluster.nameserver.registry import WorkerEntry

JOB = """\
name: checks
tasks:
  - id: one
    call: add
    args: [1, 2]
  - id: two
    call: frobnicate
    resources: {gpu: 2}
"""


def entry(tasks: set[str], resources: dict[str, float]) -> WorkerEntry:
    """A live worker offering ``tasks`` with these resource totals."""
    return WorkerEntry("w", {"compute": "PYRO:x@127.0.0.1:1"}, {"compute": 2}, frozenset(), frozenset(tasks),
                       2, resources)  # fmt: skip


def spec_of(tmp_path: Path, text: str = JOB) -> tuple[Path, JobSpec]:
    path = tmp_path / "job.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path, load_job(path)


def test_an_unknown_task_names_its_line(tmp_path: Path) -> None:
    _, spec = spec_of(tmp_path)
    with pytest.raises(JobFileError) as info:
        check_task_names(spec, {"add", "fib"})
    assert info.value.where == "tasks[1].call (line 7)", str(info.value)
    assert "unknown task 'frobnicate'" in info.value.message


def test_an_unfit_ask_names_its_line(tmp_path: Path) -> None:
    _, spec = spec_of(tmp_path)
    with pytest.raises(JobFileError) as info:
        check_resources(spec, [entry({"add", "frobnicate"}, {"cpu": 2.0, "gpu": 1.0})])
    assert info.value.where == "tasks[1].resources (line 8)", str(info.value)
    assert "gpu" in info.value.message


def test_checks_that_pass_do_not_read_the_file_again(tmp_path: Path) -> None:
    path, spec = spec_of(tmp_path)
    path.unlink()  # gone after loading: a check that passes has no line to look for
    check_task_names(spec, {"add", "frobnicate"})
    check_resources(spec, [entry({"add", "frobnicate"}, {"cpu": 2.0, "gpu": 2.0})])
    with pytest.raises(JobFileError) as info:  # a problem still names its place, without a line
        check_task_names(spec, {"add"})
    assert info.value.where == "tasks[1].call", str(info.value)


def test_the_answers_so_far_are_enough_only_when_every_check_passes_on_them(tmp_path: Path) -> None:
    # The look-up stops waiting for other workers once these pass: each called task offered, and
    # each ask fitting a worker that offers its task. Anything less waits for every answer.
    _, spec = spec_of(tmp_path)
    enough = checks_pass(spec)
    adder, small, big = (
        entry({"add"}, {"cpu": 2}),
        entry({"frobnicate"}, {"cpu": 2, "gpu": 1}),
        entry({"frobnicate"}, {"cpu": 2, "gpu": 4}),
    )
    assert not enough([adder])  # frobnicate unknown so far
    assert not enough([adder, small])  # offered, but too small: a bigger one may still answer
    assert enough([adder, small, big]) and enough([big, adder])
    tagged = spec_of(tmp_path, JOB + "    tags: [gpu-box]\n")[1]
    assert not checks_pass(tagged)([adder, big])  # the worker that fits lacks the tag
    assert checks_pass(tagged)([adder, entry_tagged({"frobnicate"}, {"cpu": 2, "gpu": 2}, {"gpu-box"})])


def entry_tagged(tasks: set[str], resources: dict[str, float], tags: set[str]) -> WorkerEntry:
    """A live worker offering ``tasks`` with these resource totals and tags."""
    uris = {"compute": "PYRO:t@127.0.0.1:1"}
    return WorkerEntry("t", uris, {"compute": 2}, frozenset(tags), frozenset(tasks), 2, resources)
