"""Turn a fetched body into the page record of the spec: charset, title, links, CSS fields (no I/O)."""

from __future__ import annotations

import codecs
import contextlib
import re
from functools import lru_cache
from typing import Any
from urllib.parse import urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser

from pyrocluster.crawl.urls import MAX_URL_CHARS

CHARSET_SNIFF_BYTES = 2048
"""How far into an HTML body to look for ``<meta charset>`` when the header names none."""
RECORD_KEYS = frozenset(
    {
        "url",
        "final_url",
        "http_status",
        "content_type",
        "title",
        "links",
        "bytes",
        "sha256",
        "elapsed_ms",
        "truncated",
        "text",
        "headers",
        "raw",
        "changed",
    }
)
"""Keys of the page record; extract fields may not reuse them."""

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:\-]+)""", re.IGNORECASE)
_WS = re.compile(r"\s+")
_NOT_PLAIN = re.compile(r"/\.|[\\;\t\r\n]")


@lru_cache(maxsize=1024)
def check_selector(selector: str) -> str | None:
    """What is wrong with a CSS selector (selectolax cannot parse it), or None when it is usable."""
    if not isinstance(selector, str) or not selector.strip():
        return "a CSS selector must be a non-empty string"
    try:
        LexborHTMLParser("<p></p>").css_first(selector)
    except Exception as exc:  # selectolax raises its own error type; any failure means unusable
        return f"bad CSS selector {selector!r}: {exc}"
    return None


def _charset(content_type: str, body: bytes, is_html: bool) -> str:
    """The body's encoding: the header's charset, else an HTML ``<meta charset>``, else UTF-8."""
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            name = value.strip().strip("\"'")
            try:
                return codecs.lookup(name).name
            except LookupError:
                break
    if is_html:
        match = _META_CHARSET.search(body, 0, CHARSET_SNIFF_BYTES)
        if match:
            try:
                return codecs.lookup(match.group(1).decode("ascii")).name
            except (LookupError, UnicodeDecodeError):
                pass
    return "utf-8"


def _looks_like_html(body: bytes) -> bool:
    head = body[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head


def is_html(content_type: str | None, body: bytes) -> bool:
    """True when the body is parsed for title and links: an HTML type, or no type and HTML-looking."""
    mime = (content_type or "").partition(";")[0].strip().lower()
    return mime in _HTML_TYPES or (not mime and _looks_like_html(body))


def _plain_path(href: str) -> bool:
    """True for ``/path...`` that urljoin would append as is.

    Not for ``//host``, a dot segment, a backslash, ``;`` params, tabs or newlines (which
    urlsplit drops), nor an empty query (which urljoin drops).
    """
    if href[0] != "/" or href[1:2] == "/" or _NOT_PLAIN.search(href):
        return False
    query = href.find("?")
    return query < 0 or href[query + 1 : query + 2] not in ("", "#")


def extract_links(tree: LexborHTMLParser, page_url: str) -> list[str]:
    """Absolute http(s) links of a parsed page, fragments removed, deduplicated in page order."""
    base = page_url
    base_node = tree.css_first("base[href]")
    if base_node is not None:
        href = (base_node.attributes.get("href") or "").strip()
        if href:
            with contextlib.suppress(ValueError):
                base = urljoin(page_url, href)
    # "/path" links (most of them) join by concatenation: urljoin costs more than the parse
    parts = urlsplit(base)
    origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") else None
    links: dict[str, None] = {}
    for node in tree.css("a[href], area[href]"):
        href = (node.attributes.get("href") or "").strip()
        if not href or href[0] == "#":  # no target, or a place in this same page
            continue
        if origin is not None and _plain_path(href):
            href = origin + href
        elif not href[:8].lower().startswith(("http://", "https://")):
            try:
                href = urljoin(base, href)
            except ValueError:
                continue
            # other schemes (mailto:, javascript:, ftp:, ...) come out of urljoin unchanged
            if not href[:8].lower().startswith(("http://", "https://")):
                continue
        href = href.partition("#")[0]
        if len(href) <= MAX_URL_CHARS:
            links[href] = None
    return list(links)


def _node_text(tree: LexborHTMLParser, selector: str) -> str | None:
    node = tree.css_first(selector)
    return None if node is None else node.text(deep=True).strip()


def fill_record(page: dict[str, Any], body: bytes, html: bool, options: dict[str, Any]) -> dict[str, Any]:
    """Add ``title``, ``links``, the ``extract`` fields and (option ``body``) ``text`` to ``page``.

    ``page`` already holds ``final_url`` and ``content_type``; relative links resolve against
    the final URL (or the page's ``<base href>``).
    """
    extract: dict[str, str] = options.get("extract") or {}
    charset = _charset(page["content_type"] or "", body, html) if html or options.get("body") else ""
    if html:
        # selectolax decodes UTF-8 itself (bad bytes become U+FFFD, as decode("replace") does)
        tree = LexborHTMLParser(body if charset == "utf-8" else body.decode(charset, "replace"))
        title = tree.css_first("title")
        if title is not None:
            page["title"] = _WS.sub(" ", title.text(deep=True)).strip()
        page["links"] = extract_links(tree, page["final_url"])
        for field, selector in extract.items():
            page[field] = _node_text(tree, selector)
    else:
        for field in extract:
            page[field] = None
    if options.get("body"):
        page["text"] = body.decode(charset, "replace")
    return page
