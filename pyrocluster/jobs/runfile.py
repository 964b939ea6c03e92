"""Which job wrote a results file and whether that run finished: a small JSON file beside it.

``<output>.run.json`` holds ``{"job": NAME, "finished": BOOL}``. It is written ``finished: false``
before the first outcome and ``true`` when the run ends (failed tasks included; not when it was
interrupted or killed). ``submit`` reads it to refuse replacing an unfinished run without
``--overwrite`` and to refuse ``--resume`` of another job's file. Without it, ``--resume`` judges
by the file's ids instead (:func:`foreign_line`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Container
from pathlib import Path
from typing import Any

import orjson

from pyrocluster.errors import ConfigError

SUFFIX = ".run.json"


def marker_path(output: Path) -> Path:
    """The run file beside a results file."""
    return output.with_name(output.name + SUFFIX)


def read_marker(output: Path) -> dict[str, Any] | None:
    """The run file's contents, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(marker_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def foreign_line(output: Path, ids: Container[str]) -> tuple[int, str] | None:
    """The first line of ``output`` (its number and id) whose id is not in ``ids``, or None.

    None too for a file that is no results file (a line that is not a record, but a torn last
    one): the results store's own read refuses it, saying so.
    """
    foreign: tuple[int, str] | None = None
    torn = False
    with open(output, "rb") as file:
        for number, line in enumerate(file, 1):
            if torn:  # a bad line followed by more lines is damage, not a torn write
                return None
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                torn = True
                continue
            key = record.get("id") if isinstance(record, dict) else None
            if not isinstance(key, str):
                return None
            if foreign is None and key not in ids:
                foreign = number, key
    return foreign


def check_start(
    output: Path, job: str, resume: bool, overwrite: bool, ids: Container[str] | None = None
) -> None:
    """ConfigError (exit 2, nothing run) when starting would mix or destroy another run's results.

    ``ids`` are the record ids the job writes: with ``resume`` and no run file, a results file
    holding any other id is another job's (or an older shape of this one's), and is refused.
    """
    marker = read_marker(output)
    if resume:
        if marker is not None and marker.get("job") != job:
            raise ConfigError(
                f"--resume: {output} holds the results of job {marker.get('job')!r}, not {job!r}; "
                "choose another --out, or start over with --overwrite instead of --resume"
            )
        if marker is None and ids is not None and output.is_file():
            foreign = foreign_line(output, ids)
            if foreign is not None:
                raise ConfigError(
                    f"--resume: {output} was not written by job {job!r}: its line {foreign[0]} has id "
                    f"{foreign[1]!r}, which this job never writes (and there is no "
                    f"{marker_path(output).name} to say whose it is); choose another --out, "
                    "or start over with --overwrite instead of --resume"
                )
        return
    if overwrite or not output.exists() or output.stat().st_size == 0:
        return
    if marker is None or not marker.get("finished"):
        whose = f" of job {marker.get('job')!r}" if marker else ""
        raise ConfigError(
            f"{output} holds an unfinished run{whose}: "
            "continue it with --resume, or replace it with --overwrite"
        )


def mark(output: Path, job: str, finished: bool) -> None:
    """Write the run file atomically."""
    path = marker_path(output)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"job": job, "finished": finished}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
