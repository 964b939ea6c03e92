"""PageFetcher and CrawlService against a real local web site (tests/sites.py)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import msgpack
import pytest
from Pyro5.server import _get_exposed_members

from pyrocluster.crawl.fetch import USER_AGENT, PageFetcher
from pyrocluster.crawl.policy import Frontier
from pyrocluster.crawl.service import CrawlService
from pyrocluster.protocol import ERROR, OK, TRANSIENT
from tests.sites import SiteServer, wait_until

BIG = 300_000


@pytest.fixture(scope="module")
def site() -> Iterator[SiteServer]:
    with SiteServer(pages=30, big_bytes=BIG) as server:
        yield server


@pytest.fixture(scope="module")
def fetcher() -> Iterator[PageFetcher]:
    with PageFetcher(concurrency=8) as f:
        yield f


class FakeState:
    """The worker state the crawl service reports to."""

    def __init__(self) -> None:
        self.draining = False
        self.recorded: list[list[Any]] = []
        self.active = 0

    def accepting(self) -> bool:
        return not self.draining

    def record(self, outcomes: list[list[Any]]) -> None:
        self.recorded.extend(outcomes)

    def enter(self) -> None:
        self.active += 1

    def leave(self) -> None:
        self.active -= 1


@pytest.fixture
def service() -> Iterator[tuple[CrawlService, FakeState]]:
    state = FakeState()
    svc = CrawlService(3, state)
    yield svc, state
    svc.close()


def ok_page(outcome: list[Any]) -> dict[str, Any]:
    kind, value, elapsed_ms = outcome
    assert kind == OK, value
    assert elapsed_ms >= 0
    return value


# ---- the page record -----------------------------------------------------------------------


def test_page_record_title_links_and_digest(site, fetcher):
    page = ok_page(fetcher.fetch(site.url("/page/3.html"), {}))
    body = site._page(3).encode()
    assert page["url"] == page["final_url"] == site.url("/page/3.html")
    assert page["http_status"] == 200
    assert page["content_type"] == "text/html; charset=utf-8"
    assert page["title"] == "Page 3"
    # absolute, fragment-free, http(s) only, deduplicated, in page order
    assert page["links"] == [
        site.url("/page/4.html"),
        site.url("/page/7.html"),
        site.url("/page/24.html"),
        site.url("/"),
    ]
    assert page["bytes"] == len(body)
    assert page["sha256"] == hashlib.sha256(body).hexdigest()
    assert page["truncated"] is False
    assert page["elapsed_ms"] > 0
    msgpack.unpackb(msgpack.packb(page))  # travels over the cluster's serializer as is


def test_root_links_to_the_external_host_without_requesting_it(site, fetcher):
    page = ok_page(fetcher.fetch(site.url("/"), {}))
    assert site.external_url in page["links"]
    assert site.url("/private/0.html") in page["links"]
    assert site.external_requests == []


def test_extract_fields_by_css_selector(site, fetcher):
    options = {"extract": {"h1": "h1", "price": ".price", "desc": "#desc", "missing": ".nope"}}
    page = ok_page(fetcher.fetch(site.url("/extract.html"), options))
    assert page["title"] == "Extract page"
    assert page["h1"] == "Big Title"
    assert page["price"] == "12.50"  # the first match
    assert page["desc"] == "First line"
    assert page["missing"] is None


def test_non_html_is_not_parsed_and_body_option_returns_text(site, fetcher):
    page = ok_page(fetcher.fetch(site.url("/text.txt"), {"extract": {"t": "title"}, "body": True}))
    assert page["title"] is None and page["links"] == [] and page["t"] is None
    assert page["text"].startswith("<title>not html</title>")
    robots = ok_page(fetcher.fetch(site.url("/robots.txt"), {"body": True}))
    assert robots["text"] == site.robots
    assert "text" not in ok_page(fetcher.fetch(site.url("/robots.txt"), {}))


def test_base_href_and_declared_charset(site, fetcher):
    page = ok_page(fetcher.fetch(site.url("/base.html"), {}))
    assert page["links"] == [site.url("/page/3.html"), site.url("/page/4.html")]
    assert ok_page(fetcher.fetch(site.url("/latin1.html"), {}))["title"] == "Café"


def test_user_agent_default_and_override(site, fetcher):
    sent = ok_page(fetcher.fetch(site.url("/headers"), {"body": True}))["text"]
    assert f"User-Agent: {USER_AGENT}\n" in sent
    assert USER_AGENT.startswith("pyrocluster/")
    sent = ok_page(fetcher.fetch(site.url("/headers"), {"body": True, "user_agent": "probe/1"}))["text"]
    assert "User-Agent: probe/1\n" in sent


# ---- redirects -----------------------------------------------------------------------------


def test_redirect_chain_is_followed_to_its_final_url(site, fetcher):
    site.reset()
    page = ok_page(fetcher.fetch(site.url("/redirect/3"), {}))
    assert page["url"] == site.url("/redirect/3")
    assert page["final_url"] == site.url("/redirect/0")
    assert page["title"] == "Redirect target"
    assert site.requests == ["/redirect/3", "/redirect/2", "/redirect/1", "/redirect/0"]


def test_five_redirects_are_followed_six_are_too_many(site, fetcher):
    assert ok_page(fetcher.fetch(site.url("/redirect/5"), {}))["final_url"] == site.url("/redirect/0")
    kind, error, _ = fetcher.fetch(site.url("/redirect/6"), {})
    assert kind == ERROR and error["type"] == "TooManyRedirects"


def test_redirect_to_another_scheme_is_not_followed(site, fetcher):
    site.reset()
    for target in ("file:///etc/passwd", "ftp://127.0.0.1/x", "javascript:alert(1)"):
        kind, error, _ = fetcher.fetch(site.url(f"/redirect-to?url={target}"), {})
        # httpx cannot even parse "javascript:alert(1)" as a URL: InvalidURL, equally final
        assert kind == ERROR and error["type"] in {"RefusedScheme", "InvalidURL"}, (target, error)
    assert len(site.requests) == 3


def test_a_redirect_is_returned_as_it_is_when_asked_with_its_validators(site, fetcher):
    site.reset()
    options = {"follow_redirects": False, "keep_headers": True}
    page = ok_page(fetcher.fetch(site.url("/redirect/2"), options))
    assert page["http_status"] == 302 and page["headers"] == {"location": site.url("/redirect/1")}
    assert site.requests == ["/redirect/2"]
    page = ok_page(fetcher.fetch(site.url("/page/1.html"), {"keep_headers": True}))
    assert set(page["headers"]) == {"etag", "last-modified"}


def test_a_requests_own_headers_go_to_its_first_origin_only(site, fetcher):
    site.reset()
    target = quote(site.external_url + "x")
    options = {"headers": {"X-Token": "t0k3n", "Cookie": "s=1"}}
    assert ok_page(fetcher.fetch(site.url(f"/redirect-to?url={target}"), options))["title"] == "External"
    (first, sent), (_, followed) = site.request_headers
    assert first.startswith("/redirect-to") and sent["X-Token"] == "t0k3n" and sent["Cookie"] == "s=1"
    assert "X-Token" not in followed and "Cookie" not in followed


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"Host": "x"}, "not allowed"),
        ({"X-A": "a\nb"}, "one-line"),
        (["X-A"], "a dict"),
        ({"X-A": 5}, "one-line"),
    ],
)
def test_bad_request_headers_are_refused_before_any_request(site, fetcher, headers, fragment):
    kind, error, _ = fetcher.fetch(site.url("/page/1.html"), {"headers": headers})
    assert kind == ERROR and error["type"] == "InvalidOptions" and fragment in error["message"]


# ---- failures ------------------------------------------------------------------------------


def test_404_is_a_final_error(site, fetcher):
    kind, error, _ = fetcher.fetch(site.url("/status/404"), {})
    assert kind == ERROR
    assert error == {"type": "HTTPError", "message": "404 Not Found", "traceback": "", "http_status": 404}


def test_500_is_transient_and_the_retry_succeeds(site, fetcher):
    kind, error, _ = fetcher.fetch(site.url("/status/500-once/k1"), {})
    assert kind == TRANSIENT and error["http_status"] == 500 and error["type"] == "HTTPError"
    assert ok_page(fetcher.fetch(site.url("/status/500-once/k1"), {}))["title"] == "Recovered k1"


@pytest.mark.parametrize("status", [429, 503])
def test_busy_statuses_are_transient(site, fetcher, status):
    assert fetcher.fetch(site.url(f"/status/{status}"), {})[0] == TRANSIENT


def test_a_server_that_never_answers_is_cut_off_at_the_timeout(site, fetcher):
    start = time.monotonic()
    kind, error, elapsed_ms = fetcher.fetch(site.url("/slow"), {"timeout": 0.5})
    took = time.monotonic() - start
    assert kind == TRANSIENT and "Timeout" in error["type"], error
    assert 0.45 <= took < 1.5
    assert 450 <= elapsed_ms < 1500


def test_connection_refused_is_transient(fetcher):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kind, error, _ = fetcher.fetch(f"http://127.0.0.1:{port}/", {"timeout": 2})
    assert kind == TRANSIENT and error["type"] == "ConnectError"


def test_body_over_max_bytes_is_truncated(site, fetcher):
    page = ok_page(fetcher.fetch(site.url("/big"), {"max_bytes": 10_000}))
    assert page["truncated"] is True and page["bytes"] == 10_000
    assert page["title"] == "Big"  # the part read is still parsed
    full = ok_page(fetcher.fetch(site.url("/big"), {}))
    assert full["truncated"] is False and full["bytes"] == BIG
    exact = ok_page(fetcher.fetch(site.url("/big"), {"max_bytes": BIG}))
    assert exact["truncated"] is False and exact["bytes"] == BIG


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
        "data:text/html,<a>x</a>",
        "javascript:alert(1)",
        "/relative",
        "",
    ],
)
def test_other_schemes_are_refused_without_any_io(url, monkeypatch):
    with PageFetcher(1) as f:

        def boom(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("nothing may be sent")

        monkeypatch.setattr(f._transport, "handle_async_request", boom)
        kind, error, elapsed_ms = f.fetch(url, {})
    assert kind == ERROR and error["type"] == "RefusedScheme" and elapsed_ms == 0.0


@pytest.mark.parametrize(
    ("url", "options"),
    [
        (12, {}),
        (None, {}),
        ("http://127.0.0.1/" + "a" * 9000, {}),
        ("http://", {}),
        ("http://127.0.0.1/", {"bogus": 1}),
        ("http://127.0.0.1/", {"max_bytes": -1}),
        ("http://127.0.0.1/", {"max_bytes": True}),
        ("http://127.0.0.1/", {"timeout": 0}),
        ("http://127.0.0.1/", {"timeout": "5"}),
        ("http://127.0.0.1/", {"extract": {"x": "..bad"}}),
        ("http://127.0.0.1/", {"extract": {"links": "a"}}),
        ("http://127.0.0.1/", {"extract": ["h1"]}),
        ("http://127.0.0.1/", {"user_agent": "a\r\nX-Evil: 1"}),
        ("http://127.0.0.1/", {"body": "yes"}),
        ("http://127.0.0.1/", "not a dict"),
    ],
)
def test_bad_urls_and_options_are_errors_not_exceptions(url, options):
    with PageFetcher(1) as f:
        kind, error, _ = f.fetch(url, options)
    assert kind == ERROR
    assert set(error) >= {"type", "message", "traceback"}


def test_fetcher_is_safe_from_many_threads(site, fetcher):
    urls = [site.url(f"/page/{i % 30}.html") for i in range(120)]
    with ThreadPoolExecutor(16) as pool:
        pages = [ok_page(o) for o in pool.map(lambda u: fetcher.fetch(u, {}), urls)]
    assert [p["title"] for p in pages] == [f"Page {i % 30}" for i in range(120)]


def test_connections_are_kept_alive_and_reused_per_origin():
    with SiteServer(pages=10) as site, PageFetcher(4) as fetcher:
        for i in range(12):
            ok_page(fetcher.fetch(site.url(f"/page/{i % 10}.html"), {}))
        assert site.connections_opened == 1  # one request at a time: one kept-alive connection
        pages = fetcher.fetch_many([(site.url(f"/page/{i}.html"), {}) for i in range(10)])
        assert all(o[0] == OK for o in pages)
        assert site.connections_opened <= 4  # at most `concurrency` connections, kept for later
        opened = site.connections_opened
        for i in range(8):  # another origin in between does not cost this one its connection
            ok_page(fetcher.fetch(site.url(f"/page/{i}.html"), {}))
            ok_page(fetcher.fetch(site.external_url, {}))
        assert site.connections_opened == opened


def test_a_connection_the_server_closed_while_idle_is_not_reused():
    with SiteServer(pages=5) as site, PageFetcher(2) as fetcher:
        for i in range(6):
            page = ok_page(fetcher.fetch(site.url(f"/hangup/{i}"), {}))
            assert page["title"] == "Hangup"
            assert wait_until(lambda: not site._servers[0].connections, 5.0)  # the server hung up
        assert site.connections_opened == 6


# ---- CrawlService --------------------------------------------------------------------------


def test_run_batch_returns_one_outcome_per_call_in_order(site, service):
    svc, state = service
    calls = [
        ["fetch", [site.url("/page/1.html")], {"extract": {"h1": "h1"}}, 10],
        ["fetch", [site.url("/status/404")], {}, 10],
        ["fetch", [site.url("/page/2.html")], None, None],
    ]
    reply = svc.run_batch(calls)
    kinds = [o[0] for o in reply["outcomes"]]
    assert kinds == [OK, ERROR, OK]
    assert reply["outcomes"][0][1]["h1"] == "Heading 1"
    assert len(state.recorded) == 3 and state.active == 0
    msgpack.unpackb(msgpack.packb(reply))


def test_run_batch_refuses_while_draining(site, service):
    svc, state = service
    state.draining = True
    assert svc.run_batch([["fetch", [site.url("/")], {}, 5]]) == {"refused": "draining"}
    assert svc.fetch(site.url("/"))[0] == TRANSIENT


@pytest.mark.parametrize("calls", [None, "fetch", 42, {}, [], [None] * 10_001])
def test_malformed_batch_is_an_error_reply(service, calls):
    svc, _ = service
    reply = svc.run_batch(calls)
    assert set(reply) == {"error"}


def test_bad_calls_fail_alone(site, service):
    svc, _ = service
    good = ["fetch", [site.url("/page/5.html")], {}, 10]
    bad = [
        "fetch",
        ["fetch"],
        ["fetch", [site.url("/")], {}],
        ["compute", [site.url("/")], {}, 10],
        [None, [site.url("/")], {}, 10],
        ["fetch", site.url("/"), {}, 10],
        ["fetch", [], {}, 10],
        ["fetch", [42], {}, 10],
        ["fetch", [site.url("/")], [], 10],
        ["fetch", [site.url("/")], {1: 2}, 10],
        ["fetch", [site.url("/")], {}, -1],
        ["fetch", [site.url("/")], {}, "10"],
        ["fetch", [site.url("/")], {"nope": 1}, 10],
        ["fetch", ["file:///etc/passwd"], {}, 10],
    ]
    reply = svc.run_batch([good, *bad, good])
    outcomes = reply["outcomes"]
    assert len(outcomes) == len(bad) + 2
    assert outcomes[0][0] == OK and outcomes[-1][0] == OK
    for call, outcome in zip(bad, outcomes[1:-1], strict=True):
        assert outcome[0] == ERROR, call
        assert outcome[1]["type"] in {"InvalidCall", "InvalidOptions", "RefusedScheme"}, (call, outcome)


def test_call_timeout_caps_the_fetch_timeout(site, service):
    svc, _ = service
    start = time.monotonic()
    reply = svc.run_batch([["fetch", [site.url("/slow")], {"timeout": 30}, 0.4]])
    assert reply["outcomes"][0][0] == TRANSIENT
    assert time.monotonic() - start < 1.5


def test_batches_run_concurrently_within_the_worker_bound(site, service):
    svc, _ = service  # concurrency 3
    site.reset()
    calls = [["fetch", [site.url(f"/delay/300?{i}")], {}, 10] for i in range(6)]
    start = time.monotonic()
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: results.append(svc.run_batch(calls))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    took = time.monotonic() - start
    assert all(o[0] == OK for r in results for o in r["outcomes"]) and len(results) == 2
    assert site.max_active == 3  # all three slots used, never more, across both batches
    assert 4 * 0.3 <= took < 4 * 0.3 + 1.5  # 12 fetches of 0.3 s, 3 at a time


def test_single_fetch_and_exposed_surface(site, service):
    svc, state = service
    assert ok_page(svc.fetch(site.url("/page/0.html")))["title"] == "Page 0"
    assert svc.fetch(site.url("/"), "bad")[0] == ERROR
    assert state.recorded
    exposed = _get_exposed_members(svc)
    assert exposed["methods"] == {"run_batch", "fetch"}


def test_closed_service_answers_transient(site):
    svc = CrawlService(1, FakeState())
    svc.close()
    svc.close()  # idempotent
    reply = svc.run_batch([["fetch", [site.url("/")], {}, 5]])
    assert reply["outcomes"][0][0] == TRANSIENT


# ---- the building blocks together ----------------------------------------------------------


def crawl(frontier: Frontier, fetcher: PageFetcher, options: dict[str, Any]) -> dict[str, Any]:
    """The coordinator's crawl loop in miniature (sequential): what the runner does over Pyro5."""
    records: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while not frontier.is_finished() and time.monotonic() < deadline:
        for host in frontier.needs_robots():
            kind, value, _ = fetcher.fetch(frontier.robots_url(host), {"body": True, "max_bytes": 500_000})
            frontier.set_robots(host, value["text"] if kind == OK else None)
        for url, _depth, reason in frontier.pop_skipped():
            records[url] = ("skipped", reason)
        ready = frontier.next_ready(limit=4)
        if not ready:
            wake = frontier.next_ready_time()
            time.sleep(max(0.0, (wake or time.monotonic() + 0.01) - time.monotonic()))
            continue
        for url, depth in ready:
            kind, value, _ = fetcher.fetch(url, options)
            if kind == OK:
                frontier.add_links(url, depth, value["links"], final_url=value["final_url"])
                records[url] = ("ok", depth, value)
            else:
                records[url] = ("failed", value)
            frontier.mark_done(url)
    for url, _depth, reason in frontier.pop_skipped():
        records[url] = ("skipped", reason)
    assert frontier.is_finished()
    return records


def test_frontier_and_fetcher_crawl_the_site_within_its_bounds():
    with SiteServer(pages=40) as site, PageFetcher(4) as fetcher:
        frontier = Frontier([site.url("/")], max_depth=3, robots=True, per_host_rate=200)
        records = crawl(frontier, fetcher, {"extract": {"h1": "h1"}})
        expected = site.reachable(max_depth=3, disallow=["/private/"])
        ok = {url: rec for url, rec in records.items() if rec[0] == "ok"}
        assert sorted(ok) == sorted(site.url(p) for p in expected)
        assert all(rec[1] == expected[url.split(site.host, 1)[1]] for url, rec in ok.items())
        assert records[site.url("/private/0.html")] == ("skipped", "disallowed by robots.txt")
        assert ok[site.url("/page/2.html")][2]["h1"] == "Heading 2"
        assert site.external_requests == []
        assert site.count("/robots.txt") == 1
        assert not any(p.startswith("/private/") for p in site.requests)
        assert len(site.requests) == len(set(site.requests))  # nothing fetched twice


def test_max_pages_bounds_a_real_crawl():
    with SiteServer(pages=40, robots=None) as site, PageFetcher(4) as fetcher:
        frontier = Frontier([site.url("/")], max_pages=7, robots=True)
        records = crawl(frontier, fetcher, {})
        assert len([r for r in records.values() if r[0] == "ok"]) == 7
        assert len([p for p in site.requests if p != "/robots.txt"]) == 7


def test_the_service_loads_the_http_client_on_its_first_fetch(site: SiteServer) -> None:
    code = (
        "import sys\n"
        "from pyrocluster.crawl.service import CrawlService\n"
        "class State:\n"
        "    def accepting(self): return True\n"
        "    def record(self, outcomes): pass\n"
        "svc = CrawlService(2, State())\n"
        "print('httpx' in sys.modules)\n"
        f"print(svc.fetch({site.url('/')!r})[0])\n"
        "print('httpx' in sys.modules)\n"
        "svc.close()\n"
    )
    lines = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert lines == ["False", str(OK), "True"]


def test_a_service_closed_before_any_fetch_answers_transient() -> None:
    svc = CrawlService(2, FakeState())
    svc.close()
    kind, error, _ = svc.fetch("http://127.0.0.1:9/")
    assert kind == TRANSIENT, error
    svc.close()
