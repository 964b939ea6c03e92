"""Logging set-up for the command line (library code only calls ``getLogger``)."""

from __future__ import annotations

import logging.config

AUDIT_LOGGER = "pyrocluster.audit"
"""Who did what (``roles.audit``): logged at INFO by every command, whatever its level."""
QUIET_LIBRARIES = ("Pyro5", "httpx", "httpcore", "uvicorn")
"""Libraries whose own INFO lines (one per request) would drown ours; only with ``--debug``."""


def configure(debug: bool, info: bool = False) -> None:
    """Warnings to stderr (INFO too with ``info``, for the worker); everything with ``--debug``."""
    level = "DEBUG" if debug else "INFO" if info else "WARNING"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "plain",
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
