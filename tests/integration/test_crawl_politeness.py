"""A crawl obeys the site on a real local server: redirect hops, Crawl-delay, Retry-After, secrets."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

from pyrocluster import Cluster
from pyrocluster.crawl.urls import normalize_url
from tests.conftest import run_cli
from tests.sites import SiteServer


@pytest.fixture
def crawlers(worker_factory):
    return worker_factory(2, "--services", "crawl", "--crawl-concurrency", "8")


def test_a_redirect_out_of_allow_or_into_robots_disallowed_paths_is_never_followed(nameserver, crawlers):
    with SiteServer(pages=5) as site, Cluster(nameserver) as cluster:
        outside = normalize_url(site.url("/redirect-to?url=" + quote(site.external_url)))
        private = normalize_url(site.url("/redirect-to?url=" + quote("/private/1.html")))
        fine = site.url("/redirect/2")
        scheme = normalize_url(site.url("/redirect-to?url=" + quote("file:///etc/passwd")))
        by_url = {r["url"]: r for r in cluster.crawl([outside, private, fine, scheme], max_depth=0)}
        asked = site.requests
        external = site.external_requests
    assert external == [], "the host outside allow was requested"
    assert "/private/1.html" not in asked
    assert by_url[outside]["status"] == "skipped"
    assert by_url[outside]["reason"] == f"redirect to {site.external_url}: not in allow"
    assert by_url[private]["status"] == "skipped"
    assert by_url[private]["reason"] == f"redirect to {site.url('/private/1.html')}: disallowed by robots.txt"
    assert by_url[scheme]["status"] == "skipped"
    assert by_url[scheme]["reason"] in {
        f"redirect to file:{p}: not an http(s) URL" for p in ("/etc/passwd", "///etc/passwd")
    }
    assert by_url[fine]["status"] == "ok" and by_url[fine]["result"]["final_url"] == site.url("/redirect/0")
    assert by_url[fine]["result"]["title"] == "Redirect target"
    assert asked.count("/redirect/1") == 1 and asked.count("/redirect/0") == 1


def test_crawl_delay_spaces_every_request_whatever_per_host_rate_says(nameserver, crawlers):
    robots = "User-agent: *\nCrawl-delay: 0.5\n"
    with SiteServer(pages=5, robots=robots) as site, Cluster(nameserver) as cluster:
        pages = list(cluster.crawl(site.url("/redirect/1"), max_pages=3, max_depth=5, per_host_rate=1000))
        times = site.request_times
    assert [r["status"] for r in pages] == ["ok"] * 3
    assert len(times) == 5  # robots.txt, a redirect hop, its target, two more pages
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.45, gaps


def test_retry_after_pauses_that_host_only_and_the_page_ends_ok(nameserver, crawlers):
    with SiteServer(pages=5, robots=None) as site, Cluster(nameserver) as cluster:
        limited = site.url("/status/429-once/a?retry_after=2")
        other = [site.external_url + f"p{i}" for i in range(6)]
        allow = [site.host, site.external_url.split("/")[2]]
        by_url = {
            r["url"]: r
            for r in cluster.crawl([limited, *other], allow=allow, max_depth=0, per_host_rate=4, robots=False)
        }
        times = site.request_times
        external_times = site.external_request_times
    assert by_url[limited]["status"] == "ok" and by_url[limited]["attempts"] == 2
    assert len(times) == 2 and times[1] - times[0] >= 2.0, times
    assert sum(1 for t in external_times if times[0] < t < times[1]) >= 3, "the other host was paused too"


def test_headers_and_cookies_from_the_environment_reach_the_site_and_nothing_else(
    tmp_path: Path, nameserver, worker_factory
):
    workers = worker_factory(1, "--services", "crawl")
    token, session = "tok-3f9a1c7e5d", "sess-8b2d4e6f0a"
    with SiteServer(pages=3) as site:
        outside = site.url("/redirect-to?url=" + quote(site.external_url + "x"))
        job = tmp_path / "crawl.yaml"
        job.write_text(
            "crawl:\n"
            f"  seeds: {json.dumps([site.url('/'), outside])}\n"
            "  max_depth: 5\n"
            "  headers: {X-Token: {env: SITE_TOKEN}}\n"
            "  cookies: {session: {env: SITE_SESSION}}\n"
        )
        env = {"SITE_TOKEN": token, "SITE_SESSION": session}
        result = run_cli("submit", str(job), "--ns", nameserver, "--json", "--debug", cwd=tmp_path, env=env)
        asked = site.request_headers
        external = site.external_requests
    assert result.returncode == 0, result
    assert external == []
    assert asked and all(h.get("X-Token") == token for _, h in asked), asked
    assert all(h.get("Cookie") == f"session={session}" for _, h in asked)
    written = "".join(p.read_text() for p in tmp_path.iterdir() if p.is_file() and p != job)
    logs = result.stdout + result.stderr + "\n".join(workers[0].output)
    for secret in (token, session):
        assert secret not in written and secret not in logs
