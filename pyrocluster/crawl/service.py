"""The exposed crawl service: validates a batch of fetch calls and runs them on the fetcher's event loop.

The fetcher (httpx, the HTTP transport, the parser) is imported and started on the first fetch:
a worker starts without them, and one that never crawls never loads them.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any, Protocol

import Pyro5.api

from pyrocluster import codec
from pyrocluster.defaults import MAX_URL_CHARS  # not crawl.urls: url-normalize waits for a crawl
from pyrocluster.protocol import ERROR, TRANSIENT
from pyrocluster.roles import requires
from pyrocluster.tokens import Role

if TYPE_CHECKING:
    from pyrocluster.crawl.fetch import PageFetcher

MAX_BATCH = 10_000
"""Most fetch calls accepted in one batch."""


class CrawlState(Protocol):
    """What the service needs from the worker: whether it takes work, and where to count it."""

    def accepting(self) -> bool: ...

    def record(self, outcomes: list[list[Any]]) -> None: ...


def _invalid(message: str) -> list[Any]:
    return [ERROR, {"type": "InvalidCall", "message": message, "traceback": ""}, 0.0]


def _v1_calls(request: dict[str, Any]) -> list[Any] | None:
    """A v2 request's calls as ``[name, args, kwargs, timeout_s]`` (a bad one fails alone); None if bad."""
    calls = request.get("calls")
    if not isinstance(calls, list):
        return None
    out: list[Any] = []
    for call in calls:
        try:
            _, name, payload, timeout_s, _ = call
            args, kwargs = codec.unpack(codec.as_bytes(payload))
        except (TypeError, ValueError):  # DecodeError is a ValueError
            out.append(None)
            continue
        out.append([name, args, kwargs, timeout_s])
    return out


def _v2_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """A v1 reply with each outcome's value encoded on its own (protocol v2)."""
    if "outcomes" in reply:
        reply["outcomes"] = [[kind, codec.pack(value), ms] for kind, value, ms in reply["outcomes"]]
    return reply


def check_call(call: Any) -> str | None:
    """What is wrong with one ``["fetch", [url], options, timeout_s]`` call, or None."""
    if not isinstance(call, (list, tuple)) or len(call) != 4:
        return "a call must be [name, args, kwargs, timeout_s]"
    name, args, kwargs, timeout_s = call
    if name != "fetch":
        if not isinstance(name, str):
            return "name must be a string"
        return f"unknown crawl call {name[:100]!r}: only 'fetch'"
    if not isinstance(args, (list, tuple)) or len(args) != 1 or not isinstance(args[0], str):
        return "args must be [url] with url a string"
    if len(args[0]) > MAX_URL_CHARS:
        return f"url longer than {MAX_URL_CHARS} characters"
    if kwargs is not None and (not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs)):
        return "kwargs must be a dict of fetch options"
    if timeout_s is not None and (
        isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0
    ):
        return "timeout must be a positive number of seconds or null"
    return None


def _options(kwargs: dict[str, Any] | None, timeout_s: float | None, largest_s: float) -> dict[str, Any]:
    """The fetch options, with the call's timeout (at most ``largest_s``) as a ceiling on the fetch's own."""
    options = dict(kwargs or {})
    if timeout_s is not None:
        ceiling = min(float(timeout_s), largest_s)
        own = options.get("timeout")
        if not isinstance(own, (int, float)) or isinstance(own, bool) or own > ceiling:
            options["timeout"] = ceiling
    return options


class CrawlService:
    """Fetches pages for coordinators; at most ``concurrency`` fetches at once across all batches.

    Every fetch of the worker runs on one event loop (the fetcher's); a Pyro5 request thread only
    hands its whole batch over and waits for the outcomes.
    """

    def __init__(self, concurrency: int, state: CrawlState) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError("concurrency must be a positive integer")
        self.concurrency = concurrency
        self._state = state
        # The fetcher's gate is the bound: every batch and single fetch of this worker shares it.
        self._fetcher: PageFetcher | None = None
        self._fetcher_lock = threading.Lock()
        self._closed = False

    def _page_fetcher(self) -> PageFetcher:
        """The one fetcher, started by the first fetch (after ``close()``, a closed one)."""
        with self._fetcher_lock:
            if self._fetcher is None:
                from pyrocluster.crawl.fetch import PageFetcher

                self._fetcher = PageFetcher(self.concurrency)
                if self._closed:
                    self._fetcher.close()  # it then answers every fetch TRANSIENT, as a closed one does
            return self._fetcher

    @Pyro5.api.expose
    @requires(Role.SUBMITTER, "fetch pages")
    def run_batch(self, calls: Any) -> dict[str, Any]:
        """Run fetch calls at once: ``{"outcomes": [[kind, value, ms], ...]}`` or ``{"refused": why}``.

        A protocol-v2 request (docs/protocol.md: a dict with encoded payloads) gets a v2 reply.
        """
        if isinstance(calls, dict):
            return _v2_reply(self.run_batch(_v1_calls(calls)))
        if not self._state.accepting():
            return {"refused": "draining"}
        if not isinstance(calls, (list, tuple)) or not 0 < len(calls) <= MAX_BATCH:
            return {"error": f"a batch must be a list of 1 to {MAX_BATCH} calls"}
        enter = getattr(self._state, "enter", None)
        leave = getattr(self._state, "leave", None)
        if enter is not None:
            enter()
        try:
            outcomes = self._run(calls)
        finally:
            if leave is not None:
                leave()
        self._record(outcomes)
        return {"outcomes": outcomes}

    @Pyro5.api.expose
    @requires(Role.SUBMITTER, "fetch pages")
    def fetch(self, url: Any, options: Any = None) -> list[Any]:
        """Fetch one page: ``[kind, value, elapsed_ms]``; a draining worker answers TRANSIENT ``Draining``."""
        if not self._state.accepting():
            return [TRANSIENT, {"type": "Draining", "message": "worker is draining", "traceback": ""}, 0.0]
        outcomes = self._run([["fetch", [url], options, None]])
        self._record(outcomes)
        return outcomes[0]

    def _run(self, calls: list[Any] | tuple[Any, ...]) -> list[list[Any]]:
        """Fetch a batch's valid calls at once on the event loop; a bad call fails alone."""
        from pyrocluster.crawl.fetch import LARGEST_TIMEOUT_S

        fetcher = self._page_fetcher()
        outcomes: list[list[Any] | None] = []
        requests: list[tuple[Any, dict[str, Any]]] = []
        for call in calls:
            problem = check_call(call)
            if problem is not None:
                outcomes.append(_invalid(problem))
                continue
            _, args, kwargs, timeout_s = call
            requests.append((args[0], _options(kwargs, timeout_s, LARGEST_TIMEOUT_S)))
            outcomes.append(None)
        fetched = iter(fetcher.fetch_many(requests) if requests else ())
        return [outcome if outcome is not None else next(fetched) for outcome in outcomes]

    def _record(self, outcomes: list[list[Any]]) -> None:
        with contextlib.suppress(Exception):  # stats must never cost a batch its results
            self._state.record(outcomes)

    def close(self) -> None:
        """Stop the fetches still running (they answer TRANSIENT) and close the HTTP connections."""
        with self._fetcher_lock:
            self._closed = True
            fetcher = self._fetcher
        if fetcher is not None:
            fetcher.close()
