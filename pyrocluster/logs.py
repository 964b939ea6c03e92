"""Logging set-up for the command line (library code only calls ``getLogger``).

Two formats on stderr: ``text`` (one readable line per record) and ``json`` (one object per
line, for log shippers): ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg``, and the context
fields ``worker``, ``job``, ``task_id``, ``schedule`` where they apply. A process sets the fields
that hold for all its records with :func:`bind` (a worker its name), a thread running a job its
job with :func:`set_job` (``submit`` and each scheduler tick), and a single record adds its own
with ``extra={"task_id": ...}``.
"""

from __future__ import annotations

import contextvars
import datetime
import logging.config
import sys
import threading
from types import TracebackType
from typing import Any

import orjson

AUDIT_LOGGER = "pyrocluster.audit"
"""Who did what (``roles.audit``): logged at INFO by every command, whatever its level."""
QUIET_LIBRARIES = ("Pyro5", "httpx", "httpcore", "uvicorn")
"""Libraries whose own INFO lines (one per request) would drown ours; only with ``--debug``."""
FORMATS = ("text", "json")
CONTEXT_FIELDS = ("worker", "job", "task_id", "schedule")
"""Fields a JSON record carries when they apply (from ``bind`` or the record's ``extra``)."""

_bound: dict[str, str] = {}
_job: contextvars.ContextVar[str] = contextvars.ContextVar("pyrocluster_job", default="")
_format = "text"
_configured: tuple[bool, bool, str] | None = None
"""The arguments of the last :func:`configure` (None before it), for :func:`inherited`."""


def bind(**fields: str) -> None:
    """Context fields every later record of this process carries (``worker=``, ``job=``...)."""
    _bound.update({key: value for key, value in fields.items() if value})


def set_job(name: str) -> None:
    """The job the records of this thread (and of what it runs in its context) are about."""
    _job.set(name)


def is_json() -> bool:
    """True when stderr carries JSON records (``--log-format json``)."""
    return _format == "json"


def rfc3339(created: float) -> str:
    """A record's time as RFC 3339 in UTC with milliseconds: ``2026-01-31T12:00:00.123Z``."""
    moment = datetime.datetime.fromtimestamp(created, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback goes in ``exc``, newlines escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        doc: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None) or (key == "job" and _job.get()) or _bound.get(key)
            if value:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(doc, default=str).decode()
        except TypeError:  # a lone surrogate (a file name that is not UTF-8): written escaped
            doc = {
                k: v.encode("utf-8", "backslashreplace").decode() if isinstance(v, str) else v
                for k, v in doc.items()
            }
            return orjson.dumps(doc, default=str).decode()


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("pyrocluster").critical("uncaught %s: %s", kind.__name__, exc, exc_info=(kind, exc, tb))


def configure(debug: bool, info: bool = False, fmt: str = "text") -> None:
    """Warnings to stderr (INFO too with ``info``, for long-running commands); all with ``--debug``.

    With ``fmt="json"`` every line this process writes to stderr is a JSON record: warnings and
    uncaught exceptions (of any thread) go through logging too.
    """
    global _format, _configured
    _format = fmt if fmt in FORMATS else "text"
    _configured = (debug, info, _format)
    level = "DEBUG" if debug else "INFO" if info else "WARNING"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
                "json": {"()": JsonFormatter},
            },
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": _format,
                    "stream": "ext://sys.stderr",
                }
            },
            "root": {"handlers": ["stderr"], "level": level},
            "loggers": {
                **{
                    name: {"level": "DEBUG" if debug else "CRITICAL" if name == "Pyro5" else "WARNING"}
                    for name in QUIET_LIBRARIES
                },
                AUDIT_LOGGER: {"level": "INFO"},
            },
        }
    )
    if is_json():
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread


def inherited() -> tuple[bool, bool, str, dict[str, str]] | None:
    """This process's logging set-up and bound fields, for a child it starts (None: never set up)."""
    return None if _configured is None else (*_configured, dict(_bound))


def adopt(setup: tuple[bool, bool, str, dict[str, str]] | None) -> None:
    """Log as the parent does (``inherited()``): a worker's slot processes write its format."""
    if setup is not None:
        debug, info, fmt, fields = setup
        configure(debug, info, fmt)
        bind(**fields)


def _log_uncaught_in_thread(args: Any) -> None:
    if args.exc_value is not None:
        _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def error_line(message: str) -> None:
    """An ``error:`` line of the command line as a JSON record (``render.error`` in json mode)."""
    logging.getLogger("pyrocluster").error(message)


def notice_line(message: str) -> None:
    """A notice of the command line (``render.notice``) as a JSON record; shown at any log level."""
    logger = logging.getLogger("pyrocluster")
    logger.handle(logger.makeRecord(logger.name, logging.INFO, "", 0, message, (), None))
