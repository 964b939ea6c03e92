"""Fetch and parse one page: the hot path of the crawl service (plain logic, no Pyro5).

``PageFetcher.fetch(url, options)`` returns an outcome ``[kind, value, elapsed_ms]`` and never
raises: ``OK`` with the page record of the spec, ``ERROR`` for failures that a retry cannot
fix (4xx, refused scheme, bad options, too many redirects) and ``TRANSIENT`` for those it may
(5xx, 408, 429, connection errors, timeouts), which the coordinator retries. With the option
``any_status`` an HTTP error status is a page record too (robots.txt needs the status itself).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import re
import threading
import time
import traceback
from functools import lru_cache
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import urljoin

import httpx
from selectolax.lexbor import LexborHTMLParser

from pyrocluster import __version__
from pyrocluster.defaults import DEFAULT_CRAWL_MAX_BYTES, DEFAULT_CRAWL_TIMEOUT_S
from pyrocluster.tasks import ERROR, OK, TRANSIENT

USER_AGENT = f"pyrocluster/{__version__} (+crawler)"
"""User-Agent header sent unless the options give ``user_agent``."""
LARGEST_MAX_BYTES = 1_000_000_000
"""Largest ``max_bytes`` option accepted."""
LARGEST_TIMEOUT_S = 3600.0
"""Largest ``timeout`` option accepted, in seconds."""
MAX_REDIRECTS = 5
"""Redirects followed before the fetch fails with ``TooManyRedirects``."""
MAX_URL_CHARS = 8192
"""Longest URL accepted, in characters."""
MAX_EXTRACT_FIELDS = 100
"""Most CSS fields one fetch may extract."""
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
    }
)
"""Keys of the page record; extract fields may not reuse them."""
OPTION_KEYS = frozenset({"max_bytes", "timeout", "extract", "user_agent", "body", "any_status"})
"""Options ``fetch`` understands; any other key is refused so that typos do not pass silently."""

# HTTP statuses worth another attempt: the server said "later", not "never".
_TRANSIENT_STATUS = frozenset({408, 425, 429})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:\-]+)""", re.IGNORECASE)
_WS = re.compile(r"\s+")


def _error(type_: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "message": message, "traceback": "", **extra}


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


def check_options(options: Any) -> str | None:
    """What is wrong with a fetch options dict, or None; ``fetch`` runs this before any I/O."""
    if options is None:
        return None
    if not isinstance(options, dict):
        return "options must be a dict"
    unknown = [k for k in options if k not in OPTION_KEYS]
    if unknown:
        return f"unknown option(s) {sorted(map(str, unknown))}; known: {sorted(OPTION_KEYS)}"
    max_bytes = options.get("max_bytes", DEFAULT_CRAWL_MAX_BYTES)
    if (
        isinstance(max_bytes, bool)
        or not isinstance(max_bytes, int)
        or not 0 < max_bytes <= LARGEST_MAX_BYTES
    ):
        return f"max_bytes must be an integer in (0, {LARGEST_MAX_BYTES}]"
    timeout = options.get("timeout", DEFAULT_CRAWL_TIMEOUT_S)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout <= LARGEST_TIMEOUT_S
    ):
        return f"timeout must be a number of seconds in (0, {LARGEST_TIMEOUT_S:g}]"
    agent = options.get("user_agent", USER_AGENT)
    if not isinstance(agent, str) or not 0 < len(agent) <= 512 or any(c in agent for c in "\r\n\0"):
        return "user_agent must be a one-line string of at most 512 characters"
    for flag in ("body", "any_status"):
        if not isinstance(options.get(flag, False), bool):
            return f"{flag} must be true or false"
    extract = options.get("extract") or {}
    if not isinstance(extract, dict) or len(extract) > MAX_EXTRACT_FIELDS:
        return f"extract must be a dict of at most {MAX_EXTRACT_FIELDS} field -> CSS selector"
    for field, selector in extract.items():
        if not isinstance(field, str) or not field or field in RECORD_KEYS:
            return f"extract field {field!r} must be a non-empty string other than {sorted(RECORD_KEYS)}"
        problem = check_selector(selector) if isinstance(selector, str) else "must be a string"
        if problem:
            return f"extract field {field!r}: {problem}"
    return None


def _refused_scheme(url: str) -> str | None:
    """The scheme of ``url`` when it is not http(s), else None (cheap: no full parse)."""
    scheme, sep, _ = url.partition(":")
    scheme = scheme.strip().lower()
    if sep and scheme in ("http", "https"):
        return None
    return scheme if sep else "(none)"


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


def extract_links(tree: LexborHTMLParser, page_url: str) -> list[str]:
    """Absolute http(s) links of a parsed page, fragments removed, deduplicated in page order."""
    base = page_url
    base_node = tree.css_first("base[href]")
    if base_node is not None:
        href = (base_node.attributes.get("href") or "").strip()
        if href:
            with contextlib.suppress(ValueError):
                base = urljoin(page_url, href)
    links: dict[str, None] = {}
    for node in tree.css("a[href], area[href]"):
        href = (node.attributes.get("href") or "").strip()
        if not href or href[0] == "#":  # no target, or a place in this same page
            continue
        if not href[:8].lower().startswith(("http://", "https://")):
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


class PageFetcher:
    """Fetches pages over one shared, pooled ``httpx.Client``; safe to use from many threads."""

    def __init__(self, concurrency: int = 16) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError("concurrency must be a positive integer")
        self.concurrency = concurrency
        # At most `concurrency` requests at once, so none ever waits inside httpcore's pool:
        # httpcore 1.0.9 can close a connection it has just handed to a waiting request
        # (encode/httpcore#1110), which surfaces as a ReadError or a read timeout.
        self._gate = threading.BoundedSemaphore(concurrency)
        # Redirects are followed by hand (see _fetch) so that each hop's scheme is checked and
        # the whole chain shares one deadline; httpx's own follower could do neither.
        self._client = httpx.Client(
            headers={"User-Agent": USER_AGENT},
            # Stateless fetches: no cookie carries from one page or job to the next.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            follow_redirects=False,
            max_redirects=MAX_REDIRECTS,
            timeout=httpx.Timeout(DEFAULT_CRAWL_TIMEOUT_S),
            limits=httpx.Limits(
                max_connections=concurrency,
                max_keepalive_connections=concurrency,
                keepalive_expiry=30.0,
            ),
            trust_env=False,
        )

    def close(self) -> None:
        """Close every pooled connection."""
        self._client.close()

    def __enter__(self) -> PageFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(self, url: str, options: dict[str, Any] | None = None) -> list[Any]:
        """Fetch one http(s) URL: ``[OK, page, ms]``, ``[ERROR, error, ms]`` or ``[TRANSIENT, error, ms]``.

        Callers beyond ``concurrency`` wait for a free connection before their timeout starts.
        """
        if not isinstance(url, str):
            return [ERROR, _error("InvalidURL", "url must be a string"), 0.0]
        if len(url) > MAX_URL_CHARS:
            return [ERROR, _error("InvalidURL", f"url longer than {MAX_URL_CHARS} characters"), 0.0]
        scheme = _refused_scheme(url)
        if scheme is not None:
            return [ERROR, _error("RefusedScheme", f"scheme {scheme!r} refused: only http and https"), 0.0]
        problem = check_options(options)
        if problem:
            return [ERROR, _error("InvalidOptions", problem), 0.0]
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            return [ERROR, _error("InvalidURL", str(exc)), 0.0]
        if not parsed.host:
            return [ERROR, _error("InvalidURL", "url has no host"), 0.0]
        with self._gate:
            return self._guarded_fetch(url, parsed, options or {})

    def _guarded_fetch(self, url: str, parsed: httpx.URL, options: dict[str, Any]) -> list[Any]:
        """``fetch`` past validation: classify every failure by exception class, never raise."""
        start = time.perf_counter()
        try:
            kind, value = self._fetch(url, parsed, options, start)
        except httpx.TimeoutException as exc:
            kind, value = TRANSIENT, _error(type(exc).__name__, str(exc) or "timed out")
        except httpx.UnsupportedProtocol as exc:
            kind, value = ERROR, _error("RefusedScheme", str(exc))
        except (httpx.LocalProtocolError, httpx.DecodingError) as exc:
            kind, value = ERROR, _error(type(exc).__name__, str(exc))
        except httpx.TransportError as exc:  # connect/read/write errors, protocol errors, proxy
            kind, value = TRANSIENT, _error(type(exc).__name__, str(exc) or type(exc).__name__)
        except httpx.InvalidURL as exc:  # e.g. a redirect whose Location is not a URL
            kind, value = ERROR, _error("InvalidURL", str(exc))
        except Exception as exc:  # never raise: an unexpected failure is reported with its traceback
            kind = ERROR
            value = {
                "type": type(exc).__name__,
                "message": str(exc),
                "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            }
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        if kind == OK:
            value["elapsed_ms"] = round(elapsed_ms, 3)
        return [kind, value, elapsed_ms]

    def _fetch(
        self, url: str, parsed: httpx.URL, options: dict[str, Any], start: float
    ) -> tuple[int, dict[str, Any]]:
        """One fetch with its redirects; raises httpx errors for the caller to classify."""
        timeout_s = float(options.get("timeout", DEFAULT_CRAWL_TIMEOUT_S))
        max_bytes = options.get("max_bytes", DEFAULT_CRAWL_MAX_BYTES)
        deadline = start + timeout_s
        headers = {"User-Agent": options["user_agent"]} if "user_agent" in options else None
        request = self._client.build_request("GET", parsed, headers=headers, timeout=timeout_s)
        redirects = 0
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise httpx.ReadTimeout(f"no complete answer within {timeout_s:g} s", request=request)
            request.extensions["timeout"] = httpx.Timeout(remaining).as_dict()
            response = self._client.send(request, stream=True, follow_redirects=False)
            try:
                next_request = response.next_request
                if next_request is None:
                    return self._read(url, response, options, max_bytes, deadline, timeout_s)
            finally:
                response.close()
            redirects += 1
            if redirects > MAX_REDIRECTS:
                return ERROR, _error("TooManyRedirects", f"more than {MAX_REDIRECTS} redirects")
            if next_request.url.scheme not in ("http", "https"):
                target = str(next_request.url)[:200]
                return ERROR, _error("RefusedScheme", f"redirect to {target!r} refused: only http and https")
            request = next_request

    def _read(
        self,
        url: str,
        response: httpx.Response,
        options: dict[str, Any],
        max_bytes: int,
        deadline: float,
        timeout_s: float,
    ) -> tuple[int, dict[str, Any]]:
        """Classify the status, then stream the body up to ``max_bytes`` and build the record."""
        status = response.status_code
        if status >= 400 and not options.get("any_status"):
            reason = f"{status} {response.reason_phrase}".strip()
            error = _error("HTTPError", reason, http_status=status)
            return (TRANSIENT if status >= 500 or status in _TRANSIENT_STATUS else ERROR), error
        chunks: list[bytes] = []
        digest = hashlib.sha256()
        size = 0
        truncated = False
        for chunk in response.iter_bytes():
            if size + len(chunk) > max_bytes:
                chunk = chunk[: max_bytes - size]
                truncated = True
            if chunk:
                chunks.append(chunk)
                digest.update(chunk)
                size += len(chunk)
            if truncated:
                break
            if time.perf_counter() > deadline:
                raise httpx.ReadTimeout(f"body not complete within {timeout_s:g} s", request=response.request)
        body = b"".join(chunks)
        content_type = response.headers.get("content-type")
        mime = (content_type or "").partition(";")[0].strip().lower()
        is_html = mime in _HTML_TYPES or (not mime and _looks_like_html(body))
        final_url = str(response.url)
        page: dict[str, Any] = {
            "url": url,
            "final_url": final_url,
            "http_status": status,
            "content_type": content_type,
            "title": None,
            "links": [],
            "bytes": size,
            "sha256": digest.hexdigest(),
            "elapsed_ms": 0.0,
            "truncated": truncated,
        }
        extract: dict[str, str] = options.get("extract") or {}
        text: str | None = None
        if is_html or options.get("body"):
            text = body.decode(_charset(content_type or "", body, is_html), "replace")
        if is_html and text is not None:
            tree = LexborHTMLParser(text)
            title = tree.css_first("title")
            if title is not None:
                page["title"] = _WS.sub(" ", title.text(deep=True)).strip()
            page["links"] = extract_links(tree, final_url)
            for field, selector in extract.items():
                page[field] = _node_text(tree, selector)
        else:
            for field in extract:
                page[field] = None
        if options.get("body"):
            page["text"] = text
        return OK, page
