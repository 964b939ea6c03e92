"""What to ask again of a URL an earlier crawl fetched, and whether it changed (pure: no I/O).

``plan(mode, stored, lastmod)`` decides per URL:

* never fetched (no ``stored``): ``FETCH``;
* ``revisit: new``: ``REUSE`` (no request; the stored record, ``changed: false``);
* ``revisit: all``: ``FETCH`` unconditionally (``changed`` still from the body hash);
* ``revisit: changed``: ``REUSE`` when a sitemap ``lastmod`` is not newer than the stored fetch
  time, else ``CONDITIONAL`` with ``If-None-Match`` / ``If-Modified-Since`` from the stored
  validators (a plain fetch when the server gave none: the body hash then decides).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REVISIT_MODES = ("changed", "all", "new")
"""Values of the ``revisit`` crawl key; ``changed`` is the default with ``state``."""
FETCH, CONDITIONAL, REUSE = "fetch", "conditional", "reuse"


@dataclass(frozen=True)
class Stored:
    """What the state keeps of a URL: validators, body hash, when it was fetched, its last record."""

    etag: str | None
    last_modified: str | None
    sha256: str
    fetched_at: float
    result: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """How to visit a URL: ``action`` and the request headers it adds."""

    action: str
    headers: dict[str, str]


_FETCH = Plan(FETCH, {})
_REUSE = Plan(REUSE, {})


def plan(mode: str, stored: Stored | None, lastmod: float | None = None) -> Plan:
    """The visit of a URL under ``mode`` (see the module docstring)."""
    if stored is None or mode == "all":
        return _FETCH
    if mode == "new":
        return _REUSE
    if lastmod is not None and lastmod <= stored.fetched_at:
        return _REUSE
    headers = {}
    if stored.etag:
        headers["If-None-Match"] = stored.etag
    if stored.last_modified:
        headers["If-Modified-Since"] = stored.last_modified
    return Plan(CONDITIONAL, headers) if headers else _FETCH


def changed(stored: Stored | None, sha256: str) -> bool:
    """True for a page never stored or whose body hash differs from the stored one."""
    return stored is None or stored.sha256 != sha256


def unchanged_result(stored: Stored, http_status: int, elapsed_ms: float = 0.0) -> dict[str, Any]:
    """The record of a page known unchanged: the stored one, ``changed: false``, this visit's status."""
    return {**stored.result, "http_status": http_status, "elapsed_ms": elapsed_ms, "changed": False}
