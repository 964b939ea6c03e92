"""Environments for processes of a cluster with a secret, and for commands run with a token only."""

from __future__ import annotations

import time

from pyrocluster import tokens

NO_TLS_ENV = {"PYROCLUSTER_TLS_CERT": "", "PYROCLUSTER_TLS_KEY": "", "PYROCLUSTER_TLS_CA": ""}


def secret_env(secret: str) -> dict[str, str]:
    """A child process that holds ``secret`` and nothing else (whatever the runner's environment has)."""
    return {
        **NO_TLS_ENV,
        "PYROCLUSTER_SECRET": secret,
        "PYROCLUSTER_SECRET_FILE": "",
        "PYROCLUSTER_TOKEN": "",
    }


def token_env(token: str) -> dict[str, str]:
    """A child process that holds only ``token`` (or, with "", no token)."""
    return {**NO_TLS_ENV, "PYROCLUSTER_SECRET": "", "PYROCLUSTER_SECRET_FILE": "", "PYROCLUSTER_TOKEN": token}


def issue(secret: str, name: str, role: str, lifetime_s: int = 3600) -> str:
    """A token of ``role`` for the cluster of ``secret``, made in this process."""
    return tokens.issue(secret.encode(), name, tokens.Role.parse(role), time.time(), lifetime_s)
