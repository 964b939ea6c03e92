"""Crawl URLs: normalised absolute form and the ``host[:port]`` key that ``allow`` names (no I/O)."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urljoin, urlsplit

from url_normalize import url_normalize

from pyrocluster.defaults import MAX_URL_CHARS

NORMALIZE_CACHE_SIZE = 65536
"""Normalised URLs remembered: a site's navigation links repeat on every page."""

_DEFAULT_PORTS = {"http": "80", "https": "443"}


def normalize_url(url: str, base: str | None = None) -> str | None:
    """Absolute, normalised form of ``url`` (resolved against ``base``), or None if not http(s).

    Normalisation is done by ``url-normalize`` (RFC 3986 section 6: lowercase scheme and host,
    IDNA host, default port dropped, ``.``/``..`` resolved, percent-encoding normalised,
    empty path -> ``/``); we drop the fragment first. ``url-normalize`` was picked over
    ``w3lib.url.canonicalize_url`` because the latter always sorts query arguments: that makes
    two URLs equal that a server may treat differently, and changes the URL actually fetched.
    Query order is kept here, so ``?a=1&b=2`` and ``?b=2&a=1`` are two URLs. One liberty it
    takes: empty path segments collapse (``/a//b`` -> ``/a/b``).
    """
    if not isinstance(url, str):
        return None
    if base is not None:
        if not isinstance(base, str) or len(url) > MAX_URL_CHARS:
            return None
        try:
            url = urljoin(base, url.strip())
        except ValueError:
            return None
    return normalize_absolute(url)


@lru_cache(maxsize=NORMALIZE_CACHE_SIZE)
def normalize_absolute(url: str) -> str | None:
    url = url.strip().partition("#")[0]
    if not url or len(url) > MAX_URL_CHARS:
        return None
    try:
        parts = urlsplit(url)
        if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
            return None
        port = parts.port  # ValueError when not a number in 0..65535
        if port == 0:
            return None
        normal = url_normalize(url)
    except Exception:  # url-normalize/idna raise several types on hostile input: all mean "malformed"
        return None
    if not normal or len(normal) > MAX_URL_CHARS:
        return None
    return normal


def key_of_normal(normal: str) -> str:
    """host[:port] of a normalised URL (``scheme://netloc/...``), without userinfo."""
    return normal.split("/", 3)[2].rpartition("@")[2]


def host_key(url: str) -> str:
    """``host[:port]`` of an http(s) URL or of a bare ``host[:port]``, as ``allow`` names hosts.

    Lowercase, IDNA-encoded, port omitted when it is the scheme's default (for a bare entry,
    80 and 443 are both dropped). Raises ValueError when ``url`` is neither.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("not an http(s) URL or host[:port]")
    text = url.strip()
    bare = "://" not in text
    normal = normalize_url(f"http://{text}/" if bare else text)
    if normal is None:
        raise ValueError(f"not an http(s) URL or host[:port]: {url!r}")
    key = key_of_normal(normal)
    if bare and key.endswith(":443"):
        key = key[: -len(":443")]
    return key
