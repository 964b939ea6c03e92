"""The schedules file: schema and validation, each problem named by file, key path and line."""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

from pyrocluster.defaults import DEFAULT_CATCHUP_S, DEFAULT_SCHEDULE_OUTPUT
from pyrocluster.errors import JobFileError
from pyrocluster.jobs.spec import JobSpec, describe_value, load_job, located_error, read_document
from pyrocluster.jobs.spec import validation_error as job_validation_error
from pyrocluster.scheduler.ticks import Cron, Every, Timing, cron_problem, zone_of

TEMPLATE_FIELDS = frozenset({"name", "fire"})
"""The placeholders an ``output`` template may use."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(value: Any) -> float:
    """Seconds in ``30s``, ``5m``, ``2h``, ``1d``, ``1h30m`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 5m or 2h, got {describe_value(value)}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value.strip() and _DURATION.sub("", value.strip().lower()) == "":
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(value.strip().lower()))
    else:
        raise ValueError(f"expected a duration such as 30s, 5m or 2h, got {describe_value(value)}")
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {value!r}")
    if seconds > MAX_DURATION_S:  # dates that far out are past what a datetime holds
        raise ValueError(f"a duration may be at most {MAX_DURATION_S // 86400:g}d, got {value!r}")
    return seconds


MAX_DURATION_S = 3660 * 86400.0
"""Ten years: the longest ``every`` or ``catchup``."""
MIN_CATCHUP_S = 1.0
"""A tick is decided a moment after it comes due: a shorter ``catchup`` would skip on-time ticks."""


Duration = Annotated[float, BeforeValidator(parse_duration)]
ScheduleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,100}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ScheduleSpec(_Model):
    """One entry of ``schedules``; exactly one of ``cron`` and ``every``."""

    name: ScheduleName
    job: Annotated[str, StringConstraints(min_length=1)]
    cron: str | None = None
    every: Duration | None = None
    timezone: str = "UTC"
    misfire: Literal["skip", "once", "all"] = "once"
    catchup: Duration = DEFAULT_CATCHUP_S
    overlap: Literal["skip", "queue", "allow"] = "skip"
    output: Annotated[str, StringConstraints(min_length=1)] = DEFAULT_SCHEDULE_OUTPUT


class SchedulesFile(_Model):
    """The whole file: a non-empty list under ``schedules``."""

    schedules: Annotated[list[ScheduleSpec], Field(min_length=1)]


_SECTIONS: dict[tuple[str, ...], type[BaseModel]] = {(): SchedulesFile, ("schedules",): ScheduleSpec}


class Schedule:
    """A validated schedule: its timing, policies, job file (already checked) and output template."""

    def __init__(self, spec: ScheduleSpec, job_path: Path, job: JobSpec, timing: Timing) -> None:
        self.name = spec.name
        self.job_path = job_path
        self.job = job
        self.timing = timing
        self.misfire = spec.misfire
        self.catchup_s = spec.catchup
        self.overlap = spec.overlap
        self.output = spec.output

    def output_for(self, fire: str) -> str:
        """The results file of the tick stamped ``fire`` (``20261201T030000Z``)."""
        return self.output.format(name=self.name, fire=fire)

    def ticks_log(self) -> Path:
        """``runs/{name}/ticks.jsonl``: one line per tick's decision."""
        return Path("runs") / self.name / "ticks.jsonl"


def _template_problem(template: str) -> str | None:
    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return f"invalid template {template!r}: {exc}"
    unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
    if unknown:
        return f"unknown placeholder {{{unknown[0]}}} in {template!r} (use {{name}} and {{fire}})"
    if "fire" not in fields:
        return f"{template!r} must contain {{fire}}: each tick writes its own results file"
    return None


def _timing(spec: ScheduleSpec, fail: Any, index: int) -> Timing:
    loc = ("schedules", index)
    if (spec.cron is None) == (spec.every is None):
        both = spec.cron is not None
        raise fail(loc, "give either 'cron' or 'every', not both" if both else "give 'cron' or 'every'")
    if spec.catchup < MIN_CATCHUP_S:
        raise fail(
            (*loc, "catchup"), f"must be at least 1s (ticks are decided a moment late), got {spec.catchup:g}s"
        )
    zone = zone_of(spec.timezone)
    if zone is None:
        raise fail(
            (*loc, "timezone"), f"unknown time zone {spec.timezone!r} (an IANA name like Europe/Berlin)"
        )
    if spec.every is not None:
        if spec.every < 1 or spec.every != int(spec.every):
            raise fail(
                (*loc, "every"), f"must be a whole number of seconds, at least 1s, got {spec.every:g}s"
            )
        return Every(int(spec.every))
    assert spec.cron is not None
    problem = cron_problem(spec.cron)
    if problem:
        raise fail((*loc, "cron"), f"bad cron expression {spec.cron!r}: {problem}")
    return Cron(spec.cron, zone)


def load_schedules(path: str | Path) -> list[Schedule]:
    """Read and validate a schedules file and every job file it names; JobFileError at the first problem."""
    shown = str(path)
    text, data = read_document(path)

    def fail(loc: tuple[Any, ...], message: str) -> JobFileError:
        return located_error(shown, text, data, loc, message)

    if not isinstance(data, dict):
        raise fail(
            (), "the file is empty" if data is None else f"expected a mapping, got {describe_value(data)}"
        )
    try:
        spec = SchedulesFile.model_validate(data)
    except ValidationError as exc:
        raise job_validation_error(shown, text, data, exc, _SECTIONS) from None
    schedules: list[Schedule] = []
    seen: dict[str, int] = {}
    base = Path(path).parent
    for index, item in enumerate(spec.schedules):
        if item.name in seen:
            raise fail(
                ("schedules", index, "name"),
                f"duplicate name {item.name!r} (also schedules[{seen[item.name]}])",
            )
        seen[item.name] = index
        timing = _timing(item, fail, index)
        problem = _template_problem(item.output)
        if problem:
            raise fail(("schedules", index, "output"), problem)
        job_path = base / item.job
        try:
            job = load_job(job_path)
        except JobFileError as exc:
            what = "no such job file" if exc.message == "no such file" and not exc.where else "invalid job"
            detail = f"{exc.path}" if what == "no such job file" else str(exc)
            raise fail(("schedules", index, "job"), f"{what}: {detail}") from None
        schedules.append(Schedule(item, job_path, job, timing))
    return schedules
