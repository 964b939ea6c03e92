"""Logging set-up for the command line (library code only calls ``getLogger``)."""

from __future__ import annotations

import logging.config


def configure(debug: bool) -> None:
    """Warnings to stderr; everything with ``--debug``."""
    level = "DEBUG" if debug else "WARNING"
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
            "loggers": {"Pyro5": {"level": "DEBUG" if debug else "CRITICAL"}},
        }
    )
