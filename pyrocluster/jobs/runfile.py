"""Which job wrote a results file and whether that run finished: a small JSON file beside it.

``<output>.run.json`` holds ``{"job": NAME, "finished": BOOL}``. It is written ``finished: false``
before the first outcome and ``true`` when the run ends (failed tasks included; not when it was
interrupted or killed). ``submit`` reads it to refuse replacing an unfinished run without
``--overwrite`` and to refuse ``--resume`` of another job's file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


def check_start(output: Path, job: str, resume: bool, overwrite: bool) -> None:
    """ConfigError (exit 2, nothing run) when starting would mix or destroy another run's results."""
    marker = read_marker(output)
    if resume:
        if marker is not None and marker.get("job") != job:
            raise ConfigError(
                f"--resume: {output} holds the results of job {marker.get('job')!r}, not {job!r}; "
                "choose another --out, or start over with --overwrite instead of --resume"
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
