"""Fetch pages: the hot path of the crawl service, on one asyncio event loop (no Pyro5).

``PageFetcher.fetch(url, options)`` (from any thread) returns an outcome ``[kind, value,
elapsed_ms]`` and never raises: ``OK`` with the page record of the spec, ``ERROR`` for failures
that a retry cannot fix (4xx, refused scheme, bad options, too many redirects) and ``TRANSIENT``
for those it may (5xx, 408, 429, connection errors, timeouts), which the coordinator retries.
With the option ``any_status`` an HTTP error status is a page record too (robots.txt needs the
status itself). ``fetch_many`` runs a whole batch at once for one thread hand-off.

Redirects are followed here (up to ``MAX_REDIRECTS``, http(s) only, the request's own
``headers`` sent to the first origin only) unless ``follow_redirects`` is false: a crawl sends
every hop through its frontier, so it asks for the 3xx itself, with ``keep_headers`` for its
``Location`` (and ``ETag``, ``Last-Modified``, ``Retry-After``) in the record's ``headers``.

Every fetch of a worker runs on the fetcher's one event loop (its own thread) over one pooled
``httpx.AsyncClient`` (with ``transport.LoopTransport``, sockets as asyncio protocols): no thread
per fetch, so no GIL contention between fetches. Parsing
(``parse``) runs on the loop too, except for bodies over ``PARSE_ON_LOOP_MAX_BYTES``:
selectolax releases the GIL while it parses, so a big page is parsed in a thread, where it
neither holds up the other fetches nor waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx

from pyrocluster import __version__
from pyrocluster.crawl.parse import RECORD_KEYS, check_selector, fill_record, is_html
from pyrocluster.crawl.policy import MAX_REDIRECTS
from pyrocluster.crawl.transport import LoopTransport
from pyrocluster.crawl.urls import MAX_URL_CHARS
from pyrocluster.defaults import DEFAULT_CRAWL_MAX_BYTES, DEFAULT_CRAWL_TIMEOUT_S
from pyrocluster.protocol import ERROR, OK, TRANSIENT

USER_AGENT = f"pyrocluster/{__version__} (+crawler)"
"""User-Agent header sent unless the options give ``user_agent``."""
LARGEST_MAX_BYTES = 1_000_000_000
"""Largest ``max_bytes`` option accepted."""
LARGEST_TIMEOUT_S = 3600.0
"""Largest ``timeout`` option accepted, in seconds."""
MAX_REQUEST_HEADERS = 50
"""Most headers one fetch may add to its request."""
KEPT_HEADERS = ("etag", "last-modified", "retry-after", "location")
"""Response headers a record carries (option ``keep_headers``): validators, pauses, redirects."""
_REFUSED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
MAX_EXTRACT_FIELDS = 100
"""Most CSS fields one fetch may extract."""
PARSE_ON_LOOP_MAX_BYTES = 256 * 1024
"""Bodies up to this size are parsed on the event loop; bigger ones in a parser thread."""
PARSER_THREADS = 2
"""Threads that parse big bodies (selectolax releases the GIL while parsing)."""
OPTION_KEYS = frozenset(
    {"max_bytes", "timeout", "extract", "user_agent", "body", "any_status"}
    | {"follow_redirects", "keep_headers", "headers", "raw"}
)
"""Options ``fetch`` understands; any other key is refused so that typos do not pass silently."""

# HTTP statuses worth another attempt: the server said "later", not "never".
_TRANSIENT_STATUS = frozenset({408, 425, 429})


def _error(type_: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "message": message, "traceback": "", **extra}


def _closed() -> list[Any]:
    # TRANSIENT: another worker can still do this fetch
    return [TRANSIENT, _error("Closed", "crawl service closed"), 0.0]


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
    for flag in ("body", "raw", "any_status", "follow_redirects", "keep_headers"):
        if not isinstance(options.get(flag, False), bool):
            return f"{flag} must be true or false"
    problem = _check_headers(options.get("headers"))
    if problem:
        return problem
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


def _check_headers(headers: Any) -> str | None:
    """What is wrong with the ``headers`` option (name -> one-line string value), or None."""
    if headers is None:
        return None
    if not isinstance(headers, dict) or len(headers) > MAX_REQUEST_HEADERS:
        return f"headers must be a dict of at most {MAX_REQUEST_HEADERS} name -> value"
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name) or name.lower() in _REFUSED_HEADERS:
            return f"header name {str(name)[:60]!r} is not allowed"
        if not isinstance(value, str) or len(value) > 8192 or any(c in value for c in "\r\n\0"):
            return f"header {name!r}: the value must be a one-line string of at most 8192 characters"
    return None


def _refused_scheme(url: str) -> str | None:
    """The scheme of ``url`` when it is not http(s), else None (cheap: no full parse)."""
    scheme, sep, _ = url.partition(":")
    scheme = scheme.strip().lower()
    if sep and scheme in ("http", "https"):
        return None
    return scheme if sep else "(none)"


def _checked(url: Any, options: Any) -> tuple[httpx.URL, dict[str, Any]] | list[Any]:
    """The parsed URL and options of a fetch, or its ``ERROR`` outcome (no I/O either way)."""
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
    return parsed, options or {}


def _classify(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The outcome kind and error of a failed fetch, by exception class."""
    if isinstance(exc, httpx.TimeoutException):
        return TRANSIENT, _error(type(exc).__name__, str(exc) or "timed out")
    if isinstance(exc, httpx.UnsupportedProtocol):
        return ERROR, _error("RefusedScheme", str(exc))
    if isinstance(exc, (httpx.LocalProtocolError, httpx.DecodingError)):
        return ERROR, _error(type(exc).__name__, str(exc))
    if isinstance(exc, httpx.TransportError):  # connect/read/write errors, protocol errors, proxy
        return TRANSIENT, _error(type(exc).__name__, str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.InvalidURL):  # e.g. a redirect whose Location is not a URL
        return ERROR, _error("InvalidURL", str(exc))
    # never raise: an unexpected failure is reported with its traceback
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ERROR, {"type": type(exc).__name__, "message": str(exc), "traceback": tb}


class PageFetcher:
    """Fetches pages on its own event loop thread over one pooled ``httpx.AsyncClient``.

    Callable from any thread; at most ``concurrency`` requests are open at once, the others
    wait for a connection before their timeout starts.
    """

    def __init__(self, concurrency: int = 16) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError("concurrency must be a positive integer")
        self.concurrency = concurrency
        self._loop = asyncio.new_event_loop()
        # At most `concurrency` requests at once, so none ever waits inside httpcore's pool:
        # httpcore 1.0.9 can close a connection it has just handed to a waiting request
        # (encode/httpcore#1110), which surfaces as a ReadError or a read timeout.
        self._gate = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(
            max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=30.0
        )
        self._transport = LoopTransport(limits)
        # The client builds every request (default headers, URL checks); requests go straight
        # to its transport: redirects are followed by hand (see _fetch) so that each hop's scheme
        # is checked and the whole chain shares one deadline, and fetches keep no cookies, so
        # the client's redirect, auth and cookie layers would only cost CPU on every page.
        self._client = httpx.AsyncClient(
            headers={"User-Agent": USER_AGENT},
            # Stateless fetches: no cookie carries from one page or job to the next.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            follow_redirects=False,
            max_redirects=MAX_REDIRECTS,
            timeout=httpx.Timeout(DEFAULT_CRAWL_TIMEOUT_S),
            transport=self._transport,
            trust_env=False,
        )
        self._parsers = ThreadPoolExecutor(PARSER_THREADS, thread_name_prefix="crawl-parse")
        self._closed = False
        self._closing = threading.Lock()  # no fetch is scheduled once close() has begun
        self._thread = threading.Thread(target=self._loop.run_forever, name="crawl-loop", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the fetches still running, close every pooled connection and end the loop thread."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(RuntimeError, TimeoutError):  # the loop stopped already, or is stuck
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
        self._parsers.shutdown(wait=False, cancel_futures=True)

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._client.aclose()

    def __enter__(self) -> PageFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(self, url: Any, options: Any = None) -> list[Any]:
        """Fetch one http(s) URL: ``[OK, page, ms]``, ``[ERROR, error, ms]`` or ``[TRANSIENT, error, ms]``."""
        return self.fetch_many([(url, options)])[0]

    def fetch_many(self, requests: Sequence[tuple[Any, Any]]) -> list[list[Any]]:
        """Fetch ``(url, options)`` pairs at once and wait for all: one outcome each, in order.

        Bad URLs and options are answered here, without waking the loop.
        """
        outcomes: list[list[Any] | None] = []
        todo: list[tuple[int, str, httpx.URL, dict[str, Any]]] = []
        for url, options in requests:
            checked = _checked(url, options)
            if isinstance(checked, list):
                outcomes.append(checked)
            else:
                todo.append((len(outcomes), url, *checked))
                outcomes.append(None)
        if todo:
            results = self._run(todo)
            for (index, *_), outcome in zip(todo, results, strict=True):
                outcomes[index] = outcome
        return [o if o is not None else _closed() for o in outcomes]

    def _run(self, todo: list[tuple[int, str, httpx.URL, dict[str, Any]]]) -> list[list[Any]]:
        if len(todo) == 1:
            _, url, parsed, options = todo[0]
            coro = self._guarded_fetch(url, parsed, options)
        else:
            coro = self._gather(todo)
        with self._closing:
            if self._closed:
                coro.close()
                return [_closed() for _ in todo]
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            result = future.result()
        except CancelledError:  # closed meanwhile: another worker can still do these fetches
            return [_closed() for _ in todo]
        return result if len(todo) > 1 else [result]

    async def _gather(self, todo: list[tuple[int, str, httpx.URL, dict[str, Any]]]) -> list[list[Any]]:
        return list(await asyncio.gather(*(self._guarded_fetch(u, p, o) for _, u, p, o in todo)))

    async def _guarded_fetch(self, url: str, parsed: httpx.URL, options: dict[str, Any]) -> list[Any]:
        """One fetch past validation: classify every failure, never raise (except cancellation)."""
        async with self._gate:
            start = time.perf_counter()
            try:
                kind, value = await self._fetch(url, parsed, options, start)
            except Exception as exc:
                kind, value = _classify(exc)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        if kind == OK:
            value["elapsed_ms"] = round(elapsed_ms, 3)
        return [kind, value, elapsed_ms]

    async def _fetch(
        self, url: str, parsed: httpx.URL, options: dict[str, Any], start: float
    ) -> tuple[int, dict[str, Any]]:
        """One fetch with its redirects, each hop checked; raises httpx errors for the caller."""
        timeout_s = float(options.get("timeout", DEFAULT_CRAWL_TIMEOUT_S))
        max_bytes = options.get("max_bytes", DEFAULT_CRAWL_MAX_BYTES)
        follow = options.get("follow_redirects", True)
        deadline = start + timeout_s
        own: dict[str, str] = dict(options.get("headers") or {})
        if "user_agent" in options:
            own["User-Agent"] = options["user_agent"]
        origin = (parsed.scheme, parsed.host, parsed.port)
        target = parsed
        redirects = 0
        while True:
            remaining = deadline - time.perf_counter()
            # The request's own headers (a token, a cookie) go to the first origin only.
            same_origin = (target.scheme, target.host, target.port) == origin
            headers = own if same_origin else {k: v for k, v in own.items() if k == "User-Agent"}
            request = self._client.build_request("GET", target, headers=headers or None, timeout=remaining)
            if remaining <= 0:
                raise httpx.ReadTimeout(f"no complete answer within {timeout_s:g} s", request=request)
            response = await self._transport.handle_async_request(request)
            response.request = request
            try:
                location = response.headers.get("location") if response.is_redirect else None
                if location is None or not follow:
                    return await self._read(url, response, options, max_bytes, deadline, timeout_s)
            finally:
                await response.aclose()
            redirects += 1
            if redirects > MAX_REDIRECTS:
                return ERROR, _error("TooManyRedirects", f"more than {MAX_REDIRECTS} redirects")
            target = request.url.join(location)  # InvalidURL when Location is not a URL
            if target.scheme not in ("http", "https"):
                shown = str(target)[:200]
                return ERROR, _error("RefusedScheme", f"redirect to {shown!r} refused: only http and https")

    async def _read(
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
        size = 0
        truncated = False
        async for chunk in response.aiter_bytes():
            if size + len(chunk) > max_bytes:
                chunk = chunk[: max_bytes - size]
                truncated = True
            if chunk:
                chunks.append(chunk)
                size += len(chunk)
            if truncated:
                break
            if time.perf_counter() > deadline:
                raise httpx.ReadTimeout(f"body not complete within {timeout_s:g} s", request=response.request)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        content_type = response.headers.get("content-type")
        page: dict[str, Any] = {
            "url": url,
            "final_url": str(response.url),
            "http_status": status,
            "content_type": content_type,
            "title": None,
            "links": [],
            "bytes": size,
            "sha256": "",
            "elapsed_ms": 0.0,
            "truncated": truncated,
        }
        if options.get("keep_headers"):
            page["headers"] = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}
            if "location" in page["headers"]:  # absolute, as the next hop is requested
                page["headers"]["location"] = str(response.request.url.join(page["headers"]["location"]))
        if size <= PARSE_ON_LOOP_MAX_BYTES:
            return OK, _finish(page, body, options)
        return OK, await self._loop.run_in_executor(self._parsers, _finish, page, body, options)


def _finish(page: dict[str, Any], body: bytes, options: dict[str, Any]) -> dict[str, Any]:
    """Digest and parse a body into its page record (hashlib and selectolax release the GIL)."""
    page["sha256"] = hashlib.sha256(body).hexdigest()
    if options.get("raw"):
        page["raw"] = body
    return fill_record(page, body, is_html(page["content_type"], body), options)
