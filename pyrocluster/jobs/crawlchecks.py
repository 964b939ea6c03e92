"""The checks of a job file's ``crawl`` section that span its keys (``spec.load_job`` runs them)."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyrocluster.jobs.spec import CrawlSpec

PAGE_FIELDS = frozenset(
    {"url", "final_url", "http_status", "content_type", "title", "links", "bytes", "sha256", "elapsed_ms"}
    | {"truncated", "changed", "text", "headers", "raw"}
)
"""Fields of a crawl page record (and of the worker's answer); ``extract`` may not reuse them."""
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def check_crawl(crawl: CrawlSpec, fail: Any) -> None:
    """``revisit`` without ``state``, seeds outside ``allow``, header names, secrets whose variable is
    not set, extract fields."""
    if crawl.revisit is not None and crawl.state is None:
        raise fail(("crawl", "revisit"), "'revisit' needs 'state' (the file that remembers earlier crawls)")
    from pyrocluster.crawl.urls import host_key  # url_normalize: 30 ms to import, for a crawl only

    allowed = {host_key(entry) for entry in crawl.allow or ()}
    for i, seed in enumerate(crawl.seeds):
        try:
            key = host_key(seed)
        except ValueError as exc:
            raise fail(("crawl", "seeds", i), str(exc)) from None
        if key not in allowed:  # every request of a crawl goes to a host of allow, the seeds' too
            raise fail(("crawl", "seeds", i), f"{seed!r}: its host {key} is not in crawl.allow")
    for name in crawl.headers:
        if not _HEADER_NAME_RE.fullmatch(name) or name.lower() in ("host", "content-length", "connection"):
            raise fail(("crawl", "headers", name), f"{name!r} is not a header name that may be sent")
    for section in ("headers", "cookies"):
        for key, value in getattr(crawl, section).items():
            if isinstance(value, dict) and value["env"] not in os.environ:
                raise fail(("crawl", section, key), f"environment variable {value['env']} is not set")
    for field, selector in crawl.extract.items():
        if field in PAGE_FIELDS:
            raise fail(("crawl", "extract", field), f"field {field!r} would replace a page record field")
        if not _css_ok(selector):
            raise fail(("crawl", "extract", field), f"{selector!r} is not a valid CSS selector")


def _css_ok(selector: str) -> bool:
    try:
        from selectolax.lexbor import LexborHTMLParser
    except ImportError:  # pragma: no cover - the crawl service reports it then
        return True
    try:
        LexborHTMLParser("<p></p>").css_first(selector)
    except Exception:  # selectolax raises its own error type, which differs across versions
        return False
    return True
