"""The crawl frontier with no sockets: normalisation, dedupe, depth, max_pages, scope, robots, rate."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrocluster.crawl.hosts import MAX_CRAWL_DELAY_S, MAX_PAUSE_S, SKIPPED_ROBOTS
from pyrocluster.crawl.policy import HOP_SEEN, Frontier
from pyrocluster.crawl.urls import host_key, normalize_url


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def drain(frontier: Frontier, limit: int | None = None) -> list[tuple[str, int]]:
    """Everything ready now (no rate limit in play)."""
    return frontier.next_ready(limit=limit)


# ---- normalize_url -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HTTP://Example.COM:80/a/../b/./c?z=1&a=2#frag", "http://example.com/b/c?z=1&a=2"),
        ("http://example.com", "http://example.com/"),
        ("https://example.com:443", "https://example.com/"),
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("http://example.com:443/x", "http://example.com:443/x"),
        ("http://x.com/%7euser/a b", "http://x.com/~user/a%20b"),
        ("http://x.com/?b=2&a=1", "http://x.com/?b=2&a=1"),  # query order is kept
        ("http://x.com/p#!hashbang", "http://x.com/p"),
        ("  http://x.com/a\n", "http://x.com/a"),
        ("http://[::1]:8080/a", "http://[::1]:8080/a"),
        ("http://bücher.de/", "http://xn--bcher-kva.de/"),
    ],
)
def test_normalize_url_cases(raw, expected):
    assert normalize_url(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "mailto:someone@example.com",
        "javascript:alert(1)",
        "ftp://example.com/file",
        "file:///etc/passwd",
        "data:text/html,hi",
        "http://",
        "http:///path",
        "http://x.com:abc/",
        "http://x.com:99999/",
        "http://x.com:0/",
        "",
        "http://x.com/" + "a" * 9000,
        None,
        42,
    ],
)
def test_normalize_url_refuses_non_http_and_malformed(raw):
    assert normalize_url(raw) is None


def test_normalize_url_resolves_against_base():
    assert normalize_url("../c.html#x", "http://x.com/a/b/") == "http://x.com/a/c.html"
    assert normalize_url("//Other.com/z", "https://x.com/") == "https://other.com/z"
    assert normalize_url("?q=1", "http://x.com/p") == "http://x.com/p?q=1"
    assert normalize_url("mailto:a@b", "http://x.com/") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:8000", "127.0.0.1:8000"),
        ("Example.COM", "example.com"),
        ("example.com:80", "example.com"),
        ("example.com:443", "example.com"),
        ("https://Example.com:443/x", "example.com"),
        ("http://example.com:8080/", "example.com:8080"),
        ("http://user:pw@example.com/", "example.com"),
        ("http://[::1]:8080/", "[::1]:8080"),
    ],
)
def test_host_key(raw, expected):
    assert host_key(raw) == expected


@pytest.mark.parametrize("raw", ["", "ftp://x.com/", "http://", "not a host:xx"])
def test_host_key_rejects_garbage(raw):
    with pytest.raises(ValueError):
        host_key(raw)


# ---- seen-set, depth, max_pages, scope -----------------------------------------------------


def test_seeds_start_at_depth_zero_and_invalid_seed_is_refused():
    f = Frontier(["http://a.com", "HTTP://A.com/"], robots=False)
    assert drain(f) == [("http://a.com/", 0)]
    with pytest.raises(ValueError):
        Frontier(["ftp://a.com/"], robots=False)


def test_a_seed_outside_allow_is_refused_not_fetched():
    with pytest.raises(ValueError, match="not on an allowed host"):
        Frontier(["http://a.com/", "http://b.com/"], allow=["a.com"], robots=False)
    f = Frontier(["http://a.com/", "http://b.com/"], allow=["a.com", "b.com:80"], robots=False)
    assert sorted(drain(f)) == [("http://a.com/", 0), ("http://b.com/", 0)]


def test_no_url_is_handed_out_twice():
    f = Frontier(["http://a.com/"], robots=False)
    assert drain(f) == [("http://a.com/", 0)]
    links = ["/x", "http://a.com/x#frag", "HTTP://A.COM:80/x", "x", "/", "http://a.com/y"]
    assert f.add_links("http://a.com/", 0, links) == 2
    assert f.add_links("http://a.com/", 0, links) == 0
    assert drain(f) == [("http://a.com/x", 1), ("http://a.com/y", 1)]
    f.mark_done("http://a.com/")
    f.add_links("http://a.com/x", 1, ["/", "/x", "/y"])
    assert drain(f) == []
    assert f.mark_done("http://a.com/x") and f.mark_done("http://a.com/y")
    assert not f.mark_done("http://a.com/x")  # twice: ignored
    assert f.is_finished()


def test_depth_limit_and_link_depths():
    f = Frontier(["http://a.com/"], max_depth=2, robots=False)
    drain(f)
    f.add_links("http://a.com/", 0, ["/d1"])
    assert drain(f) == [("http://a.com/d1", 1)]
    f.add_links("http://a.com/d1", 1, ["/d2"])
    assert drain(f) == [("http://a.com/d2", 2)]
    assert f.add_links("http://a.com/d2", 2, ["/d3"]) == 0
    assert drain(f) == []


def test_max_depth_zero_fetches_only_the_seeds():
    f = Frontier(["http://a.com/", "http://a.com/b"], max_depth=0, robots=False)
    assert sorted(drain(f)) == [("http://a.com/", 0), ("http://a.com/b", 0)]
    assert f.add_links("http://a.com/", 0, ["/c"]) == 0


def test_shallower_urls_come_first_and_a_shorter_path_moves_a_url_up():
    f = Frontier(["http://a.com/"], robots=False)
    drain(f)
    f.add_links("http://a.com/", 0, ["/a"])
    a = drain(f)
    f.add_links("http://a.com/a", 1, ["/deep"])  # /deep queued at depth 2
    f.add_links("http://a.com/", 0, ["/deep", "/b"])  # ... then found at depth 1
    assert a == [("http://a.com/a", 1)]
    assert drain(f) == [("http://a.com/deep", 1), ("http://a.com/b", 1)]


def test_max_pages_bounds_what_is_handed_out():
    f = Frontier(["http://a.com/"], max_pages=5, robots=False)
    handed: list[str] = []
    queue = drain(f)
    while queue:
        url, depth = queue.pop()
        handed.append(url)
        f.add_links(url, depth, [f"/{url.count('/')}-{i}" for i in range(4)])
        f.mark_done(url)
        queue.extend(drain(f))
    assert len(handed) == 5 == len(set(handed))
    assert f.pending() == 0 and f.is_finished()
    assert f.next_ready_time() is None


def test_limit_takes_only_so_many():
    f = Frontier(["http://a.com/"], robots=False)
    drain(f)
    f.add_links("http://a.com/", 0, [f"/{i}" for i in range(10)])
    assert [u for u, _ in drain(f, limit=3)] == ["http://a.com/0", "http://a.com/1", "http://a.com/2"]
    assert f.pending() == 7 and f.in_flight() == 4


def test_allow_defaults_to_seed_hosts():
    f = Frontier(["http://a.com:8000/"], robots=False)
    drain(f)
    added = f.add_links(
        "http://a.com:8000/",
        0,
        ["/in", "http://a.com/other-port", "http://b.com/", "https://a.com:8000/tls", "http://A.com:8000/x"],
    )
    assert added == 3
    assert {u for u, _ in drain(f)} == {
        "http://a.com:8000/in",
        "https://a.com:8000/tls",
        "http://a.com:8000/x",
    }


def test_explicit_allow_list():
    f = Frontier(["http://a.com/"], allow=["a.com", "B.com:8080"], robots=False)
    drain(f)
    f.add_links("http://a.com/", 0, ["http://b.com:8080/1", "http://b.com/2", "http://c.com/", "/3"])
    assert {u for u, _ in drain(f)} == {"http://b.com:8080/1", "http://a.com/3"}


def test_final_url_after_redirect_is_not_fetched_again():
    f = Frontier(["http://a.com/old"], robots=False)
    drain(f)
    f.add_links("http://a.com/old", 0, ["/new", "/other"], final_url="http://a.com/new")
    assert drain(f) == [("http://a.com/other", 1)]


def test_requeue_puts_a_url_back_first_without_counting_it_twice():
    f = Frontier(["http://a.com/"], max_pages=3, robots=False)
    drain(f)
    f.add_links("http://a.com/", 0, ["/1", "/2", "/3"])
    assert [u for u, _ in drain(f, limit=1)] == ["http://a.com/1"]
    assert f.requeue("http://a.com/1")
    assert not f.requeue("http://a.com/1")
    assert drain(f) == [("http://a.com/1", 1), ("http://a.com/2", 1)]
    assert f.handed_out == 3


def test_restore_marks_pages_done_and_feeds_their_links():
    f = Frontier(["http://a.com/"], max_pages=4, robots=False)
    f.restore("http://a.com/", 0, ["/1", "/2"])
    f.restore("http://a.com/1", 1, ["/3"])
    assert f.handed_out == 2 and f.done == 2
    ready = drain(f)
    assert ready == [("http://a.com/2", 1), ("http://a.com/3", 2)]
    f.restore("http://a.com/", 0, [])  # restoring twice counts once
    assert f.handed_out == 4


# ---- robots.txt ----------------------------------------------------------------------------

ROBOTS = "User-agent: *\nDisallow: /private/\n"


def test_robots_holds_a_host_until_its_rules_are_known():
    f = Frontier(["http://a.com/"], robots=True)
    assert drain(f) == []
    assert f.next_ready_time() is None  # waiting for robots.txt, not for time
    assert not f.is_finished()
    assert f.needs_robots() == ["a.com"]
    assert f.needs_robots() == []  # reported once
    assert f.robots_url("a.com") == "http://a.com/robots.txt"
    f.set_robots("a.com", ROBOTS)
    assert drain(f) == [("http://a.com/", 0)]


def test_robots_disallowed_urls_are_skipped_not_fetched():
    f = Frontier(["http://a.com/", "http://a.com/private/seed"], robots=True)
    f.needs_robots()
    f.set_robots("a.com", ROBOTS)
    assert f.pop_skipped() == [("http://a.com/private/seed", 0, SKIPPED_ROBOTS)]
    assert drain(f) == [("http://a.com/", 0)]
    f.add_links("http://a.com/", 0, ["/private/x", "/public"])
    assert f.pop_skipped() == [("http://a.com/private/x", 1, SKIPPED_ROBOTS)]
    assert f.pop_skipped() == []
    assert drain(f) == [("http://a.com/public", 1)]
    f.add_links("http://a.com/public", 1, ["/private/x"])  # seen: not reported again
    assert f.pop_skipped() == [] and f.skipped == 2


def test_robots_none_allows_everything_and_robots_false_never_asks():
    f = Frontier(["http://a.com/private/x"], robots=True)
    assert f.needs_robots() == ["a.com"]
    f.set_robots("a.com", None)
    assert drain(f) == [("http://a.com/private/x", 0)]
    g = Frontier(["http://a.com/private/x"], robots=False)
    assert g.needs_robots() == []
    assert drain(g) == [("http://a.com/private/x", 0)]


def test_robots_unavailable_skips_the_whole_host_with_the_reason():
    f = Frontier(["http://a.com/", "http://a.com/x"], allow=["a.com", "b.com"], robots=True)
    assert f.needs_robots() == ["a.com"]
    f.robots_unavailable("a.com", "answered 503")
    skipped = f.pop_skipped()
    assert [(u, d) for u, d, _ in skipped] == [("http://a.com/", 0), ("http://a.com/x", 0)]
    assert all("robots.txt answered 503" in reason for _, _, reason in skipped)
    assert drain(f) == [] and f.is_finished()
    f.add_links("http://a.com/", 0, ["/later", "http://b.com/"])  # found later: skipped at once
    assert [u for u, _, _ in f.pop_skipped()] == ["http://a.com/later"]
    assert f.needs_robots() == ["b.com"]  # another host is not affected


def test_each_new_host_is_reported_once():
    f = Frontier(["http://a.com/"], allow=["a.com", "b.com"], robots=True)
    assert f.needs_robots() == ["a.com"]
    f.set_robots("a.com", "")
    drain(f)
    f.add_links("http://a.com/", 0, ["http://b.com/1", "http://b.com/2", "/x"])
    assert f.needs_robots() == ["b.com"]
    assert f.robots_url("b.com") == "http://b.com/robots.txt"
    assert drain(f) == [("http://a.com/x", 1)]
    f.set_robots("b.com", "User-agent: *\nDisallow: /2\n")
    assert drain(f) == [("http://b.com/1", 1)]
    assert [u for u, _, _ in f.pop_skipped()] == ["http://b.com/2"]


def test_robots_for_our_agent_and_crawl_delay():
    text = "User-agent: pyrocluster\nDisallow: /no\nCrawl-delay: 2\n\nUser-agent: *\nDisallow: /\n"
    clock = FakeClock()
    f = Frontier(["http://a.com/"], robots=True, per_host_rate=100, now=clock)
    f.needs_robots()
    clock.advance(0.01)  # the robots.txt fetch took 1/100 s
    f.set_robots("a.com", text)
    assert f.next_ready() == []  # the delay counts from the robots.txt answer
    assert f.next_ready_time() == pytest.approx(clock.t + 2.0)
    clock.advance(2.0)
    assert f.next_ready() == [("http://a.com/", 0)]
    f.add_links("http://a.com/", 0, ["/no", "/yes", "/yes2"])
    assert [u for u, _, _ in f.pop_skipped()] == ["http://a.com/no"]
    clock.advance(5.0)
    assert f.next_ready() == [] and f.next_ready_time() is None  # one request at a time
    f.mark_done("http://a.com/")
    assert f.next_ready() == []
    assert f.next_ready_time() == pytest.approx(clock.t + 2.0)  # the delay counts from the answer
    clock.advance(2.0)
    assert f.next_ready() == [("http://a.com/yes", 1)]


def test_crawl_delay_is_capped():
    clock = FakeClock()
    f = Frontier(["http://a.com/"], robots=True, now=clock)
    f.needs_robots()
    f.set_robots("a.com", "User-agent: *\nCrawl-delay: 100000\n")
    f.add_links("http://a.com/", 0, ["/x"])
    assert f.next_ready_time() == pytest.approx(clock.t + MAX_CRAWL_DELAY_S)


# ---- per-host rate limit -------------------------------------------------------------------


def simulate(
    frontier: Frontier, clock: FakeClock, seconds: float, step: float = 0.001
) -> list[tuple[float, str]]:
    """Dispatch whatever is ready every ``step`` for ``seconds``; each page links to 3 new ones."""
    times: list[tuple[float, str]] = []
    end = clock.t + seconds
    n = 0
    while clock.t < end:
        for host in frontier.needs_robots():
            frontier.set_robots(host, None)
        for url, depth in frontier.next_ready():
            times.append((clock.t, url))
            frontier.add_links(url, depth, [f"{url.rstrip('/')}/{n}-{i}" for i in range(3)])
            frontier.mark_done(url)
            n += 1
        clock.advance(step)
    return times


def max_in_window(times: list[float], window: float = 1.0) -> int:
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_token_bucket_keeps_each_host_at_its_rate():
    clock = FakeClock()
    f = Frontier(["http://a.com/", "http://b.com/"], robots=False, per_host_rate=5, now=clock)
    times = simulate(f, clock, seconds=4.0)
    for host in ("a.com", "b.com"):
        mine = [t for t, url in times if f"//{host}/" in url]
        assert max_in_window(mine) <= 5
        assert len(mine) >= 19  # about 5/s for 4 s: the limit does not starve the host
        gaps = [b - a for a, b in zip(mine, mine[1:], strict=False)]
        assert min(gaps) >= 0.2 - 1e-9  # burst of one: never two requests closer than 1/rate


def test_a_requeued_url_waits_for_the_rate_like_any_other():
    clock = FakeClock()
    f = Frontier(["http://a.com/"], robots=False, per_host_rate=4, now=clock)
    assert f.next_ready() == [("http://a.com/", 0)]
    assert f.requeue("http://a.com/")  # e.g. it answered 503
    assert f.next_ready() == []
    assert f.next_ready_time() == pytest.approx(clock.t + 0.25)
    clock.advance(0.25)
    assert f.next_ready() == [("http://a.com/", 0)]


def test_robots_fetch_takes_a_token_too():
    clock = FakeClock()
    f = Frontier(["http://a.com/"], robots=True, per_host_rate=2, now=clock)
    assert f.needs_robots(clock.t) == ["a.com"]
    f.set_robots("a.com", None)
    assert f.next_ready() == []
    assert f.next_ready_time() == pytest.approx(clock.t + 0.5)
    clock.advance(0.5)
    assert f.next_ready() == [("http://a.com/", 0)]


def test_next_ready_time_after_an_idle_spell_is_now():
    clock = FakeClock()
    f = Frontier(["http://a.com/"], robots=False, per_host_rate=1, now=clock)
    assert f.next_ready_time() == clock.t
    f.next_ready()
    f.add_links("http://a.com/", 0, ["/x", "/y"])
    assert f.next_ready_time() == pytest.approx(clock.t + 1.0)
    clock.advance(10.0)  # a long pause does not bank a burst
    assert len(f.next_ready()) == 1
    assert f.next_ready() == []


# ---- properties ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    graph=st.dictionaries(
        st.integers(0, 40), st.lists(st.integers(0, 40), max_size=6), min_size=1, max_size=41
    ),
    max_pages=st.integers(0, 30),
    max_depth=st.integers(0, 5),
)
def test_crawl_of_any_graph_respects_every_bound(graph, max_pages, max_depth):
    f = Frontier(["http://a.com/0"], max_pages=max_pages, max_depth=max_depth, robots=False)
    handed: list[tuple[str, int]] = []
    queue = drain(f)
    while queue:
        url, depth = queue.pop(0)
        handed.append((url, depth))
        node = int(url.rsplit("/", 1)[1])
        f.add_links(url, depth, [f"/{n}" for n in graph.get(node, [])] + ["http://other.com/"])
        f.mark_done(url)
        queue.extend(drain(f))
    urls = [u for u, _ in handed]
    assert len(urls) == len(set(urls))
    assert len(urls) <= max_pages
    assert all(d <= max_depth for _, d in handed)
    assert all(u.startswith("http://a.com/") for u in urls)
    assert f.is_finished()


# ---- redirect hops and pauses --------------------------------------------------------------


def test_a_redirect_hop_goes_through_scope_robots_rate_and_the_seen_set():
    clock = FakeClock()
    f = Frontier(["http://a.com/"], robots=True, per_host_rate=1, now=clock)
    f.needs_robots()
    f.set_robots("a.com", "User-agent: *\nDisallow: /private/\n")
    clock.advance(1.0)  # the robots.txt request took the first second
    assert f.next_ready() == [("http://a.com/", 0)]
    assert f.add_hop("http://a.com/", "http://a.com/moved", 0) is None
    assert f.next_ready() == []  # the hop waits for the host's rate like any request
    clock.advance(1.0)
    assert f.next_ready() == [("http://a.com/moved", 0)]
    assert f.add_hop("http://a.com/moved", "http://b.com/", 0) == "not in allow"
    f.add_links("http://a.com/", 0, ["/x"])
    clock.advance(1.0)
    assert f.next_ready() == [("http://a.com/x", 1)]
    assert f.add_hop("http://a.com/x", "http://a.com/private/1", 1) == SKIPPED_ROBOTS
    f.add_links("http://a.com/", 0, ["/y"])
    clock.advance(1.0)
    assert f.next_ready() == [("http://a.com/y", 1)]
    assert f.add_hop("http://a.com/y", "http://a.com/moved", 1) == HOP_SEEN
    assert f.handed_out == 3 and f.done == 3 and f.is_finished()  # three pages, each ended


def test_a_hop_to_a_new_allowed_host_waits_for_its_robots_txt():
    f = Frontier(["http://a.com/"], ["a.com", "b.com"], robots=True)
    f.needs_robots()
    f.set_robots("a.com", None)
    f.next_ready()
    assert f.add_hop("http://a.com/", "http://b.com/secret", 0) is None
    assert f.next_ready() == []
    assert f.needs_robots() == ["b.com"]
    f.set_robots("b.com", "User-agent: *\nDisallow: /secret\n")
    assert f.pop_skipped() == [("http://b.com/secret", 0, SKIPPED_ROBOTS)]


def test_pause_holds_one_host_only_and_is_capped():
    clock = FakeClock()
    f = Frontier(["http://a.com/", "http://b.com/"], robots=False, now=clock)
    assert sorted(f.next_ready()) == [("http://a.com/", 0), ("http://b.com/", 0)]
    f.pause("http://a.com/", 2.0)
    f.requeue("http://a.com/")
    f.add_links("http://b.com/", 0, ["/2"])
    assert f.next_ready() == [("http://b.com/2", 1)]
    clock.advance(1.9)
    assert f.next_ready() == []
    clock.advance(0.11)
    assert f.next_ready() == [("http://a.com/", 0)]
    f.pause("http://a.com/", 1e9)
    assert f.next_ready_time() is None or f.next_ready_time() <= clock.t + MAX_PAUSE_S


def test_urls_answered_without_a_request_take_no_share_of_the_rate():
    clock = FakeClock()
    known = {"http://a.com/1", "http://a.com/2"}
    f = Frontier(["http://a.com/"], robots=False, per_host_rate=1, now=clock, free=known.__contains__)
    assert f.next_ready() == [("http://a.com/", 0)]
    f.add_links("http://a.com/", 0, ["/1", "/2", "/3"])
    assert f.next_ready() == [("http://a.com/1", 1), ("http://a.com/2", 1)]  # no rate, no wait
    assert f.next_ready_time() == pytest.approx(clock.t + 1.0)  # /3 needs a request: it waits
    for url in ("http://a.com/", "http://a.com/1", "http://a.com/2"):
        f.mark_done(url)
    clock.advance(1.0)
    assert f.next_ready() == [("http://a.com/3", 1)]
