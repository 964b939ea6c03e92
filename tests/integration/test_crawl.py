"""Crawl jobs and the crawl API against a real local site: once per page, scope, robots, rate, failures."""

from __future__ import annotations

import json
import signal
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrocluster import Cluster, TaskFailed
from tests.conftest import run_cli, running_cluster, start_submit, submit_interrupted, wait_for
from tests.sites import SiteServer

CRAWLERS = ["--services", "crawl", "--crawl-concurrency", "8"]


def crawl_job(tmp_path: Path, seeds: list[str], **crawl: object) -> Path:
    lines = ["name: crawl", "crawl:", f"  seeds: {json.dumps(seeds)}"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in crawl.items()]
    path = tmp_path / "crawl.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def records(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "crawl.results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def crawl_ns() -> Iterator[str]:
    """Two crawlers shared by the module's tests that only crawl (each its own site, its own
    port): the name server's address."""
    with running_cluster(CRAWLERS, CRAWLERS) as ns:
        yield ns


def test_site_with_cycles_is_crawled_once_per_page_and_robots_are_honoured(tmp_path, crawl_ns):
    with SiteServer(pages=300) as site:
        job = crawl_job(tmp_path, [site.url("/")], max_pages=1000, max_depth=50, per_host_rate=1000)
        result = run_cli("submit", str(job), "--ns", crawl_ns, "--json", cwd=tmp_path)
        requested = Counter(site.requests)
        external = site.external_requests
    assert result.returncode == 0, result
    expected = site.reachable(disallow=["/private/"])
    recs = records(tmp_path)
    ok = {r["url"].split(str(site.port), 1)[1] for r in recs if r["status"] == "ok"}
    assert ok == set(expected), set(expected) ^ ok
    assert all(n == 1 for path, n in requested.items()), [p for p, n in requested.items() if n > 1]
    assert requested["/robots.txt"] == 1
    skipped = [r for r in recs if r["status"] == "skipped"]
    assert [r["url"].endswith("/private/0.html") for r in skipped] == [True]
    assert "robots.txt" in skipped[0]["reason"]
    assert not any(p.startswith("/private/") for p in requested)
    assert external == [], "a host outside allow was requested"
    page = next(r for r in recs if r["url"].endswith("/page/5.html"))
    assert page["kind"] == "crawl" and page["id"] == "crawl:" + page["url"]
    assert page["result"]["title"] == "Page 5" and page["result"]["http_status"] == 200
    assert page["depth"] >= expected["/page/5.html"]  # parallel fetches may find a longer path first
    summary = json.loads(result.stdout)
    assert summary["ok"] == len(expected) and summary["skipped"] == 1 and summary["failed"] == 0


def test_depth_and_max_pages_are_honoured(crawl_ns):
    with SiteServer(pages=300) as site, Cluster(crawl_ns) as cluster:
        shallow = list(cluster.crawl([site.url("/")], max_depth=2, robots=False))
        assert {r["depth"] for r in shallow} <= {0, 1, 2}
        fetched = {r["url"].split(str(site.port), 1)[1] for r in shallow if r["status"] == "ok"}
        assert fetched == set(site.reachable(max_depth=2))
        site.reset()
        capped = list(cluster.crawl([site.url("/")], max_pages=25, max_depth=50, robots=False))
        assert len([r for r in capped if r["status"] == "ok"]) == 25
        assert len([p for p in site.requests if p != "/robots.txt"]) == 25


def test_failures_are_recorded_as_the_spec_says(tmp_path, crawl_ns):
    with SiteServer(pages=5, big_bytes=300_000) as site:
        roots = ["/redirect/3", "/status/404", "/status/500-once/a", "/slow", "/big"]
        site_seeds = [site.url(p) for p in roots]
        job = crawl_job(tmp_path, site_seeds, max_depth=0, timeout=1, max_bytes=100_000, robots=False)
        result = run_cli("submit", str(job), "--ns", crawl_ns, "--json", cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result  # the 404 and the page that never answers fail
    by_path = {r["url"].split(str(site.port), 1)[1]: r for r in records(tmp_path)}
    redirect = by_path["/redirect/3"]
    assert redirect["status"] == "ok" and redirect["result"]["final_url"].endswith("/redirect/0")
    not_found = by_path["/status/404"]
    assert not_found["status"] == "failed" and not_found["attempts"] == 1
    assert not_found["error"]["type"] == "HTTPError" and "404" in not_found["error"]["message"]
    flaky = by_path["/status/500-once/a"]
    assert flaky["status"] == "ok" and flaky["attempts"] == 2
    slow = by_path["/slow"]
    assert slow["status"] == "failed" and slow["attempts"] == 4  # 1 + 3 retries, each cut at the timeout
    assert slow["error"]["type"] == "ReadTimeout" and slow["error"]["message"].startswith("gave up after 4")
    assert json.loads(result.stdout)["retried"] == 1 + 3  # the crawl's own retries count too
    big = by_path["/big"]
    assert big["status"] == "ok" and big["result"]["truncated"] is True and big["result"]["bytes"] == 100_000


def test_per_host_rate_holds_across_workers(crawl_ns):
    with SiteServer(pages=120) as site, Cluster(crawl_ns) as cluster:
        pages = list(cluster.crawl([site.url("/")], max_pages=60, per_host_rate=20, robots=False))
        assert len(pages) == 60
        times = site.request_times
    assert len(times) == 60
    worst = max_in_one_second(times)
    assert worst <= 24, f"{worst} requests within one second at per_host_rate 20"


def max_in_one_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


def test_retries_wait_for_the_per_host_rate_too(crawl_ns):
    # every page answers 503 once, then 200: each page costs two requests, both under the rate
    flaky = [f"/status/503-once/{i}" for i in range(14)]
    with SiteServer(pages=5, root_links=flaky) as site, Cluster(crawl_ns) as cluster:
        pages = list(cluster.crawl([site.url("/")], max_depth=1, per_host_rate=5, robots=False))
        times = site.request_times
        requested = Counter(site.requests)
    by_path = {r["url"].split(str(site.port), 1)[1]: r for r in pages}
    assert all(by_path[path]["status"] == "ok" and by_path[path]["attempts"] == 2 for path in flaky)
    assert all(requested[path] == 2 for path in flaky)
    assert max_in_one_second(times) <= 5 + 4, "retries went around per_host_rate 5 (burst 4)"


def test_robots_txt_5xx_or_unreachable_disallows_the_host_and_4xx_allows_it(crawl_ns):
    with Cluster(crawl_ns) as cluster:
        with SiteServer(pages=10, robots_status=503) as site:
            records = list(cluster.crawl([site.url("/")], max_depth=2, robots=True))
            assert site.requests == ["/robots.txt"]
        assert [(r["url"], r["status"]) for r in records] == [(site.url("/"), "skipped")]
        assert "robots.txt answered 503" in records[0]["reason"]
        with SiteServer(pages=10, robots="User-agent: *\nDisallow: /\n", robots_status=403) as site:
            records = list(cluster.crawl([site.url("/")], max_depth=1, robots=True))
            assert site.count("/robots.txt") == 1 and site.count("/") == 1  # a 4xx allows all
        assert {r["status"] for r in records} == {"ok"} and len(records) == 4
        with socket.socket() as closed:  # a port where nothing listens: robots.txt unreachable
            closed.bind(("127.0.0.1", 0))
            seed = f"http://127.0.0.1:{closed.getsockname()[1]}/"
            records = list(cluster.crawl([seed], robots=True, retries=1))
    assert [(r["url"], r["status"]) for r in records] == [(seed, "skipped")]
    assert "robots.txt could not be fetched" in records[0]["reason"], records[0]["reason"]


def test_a_page_whose_site_refuses_the_connection_fails_with_the_sites_error(crawl_ns):
    """The site was at fault, not the worker: the record names the connection's own error and
    the attempts made, not an empty "worker unavailable"."""
    with socket.socket() as closed:  # a port where nothing listens
        closed.bind(("127.0.0.1", 0))
        seed = f"http://127.0.0.1:{closed.getsockname()[1]}/"
        with Cluster(crawl_ns) as cluster:
            (record,) = list(cluster.crawl([seed], robots=False, retries=1))
    assert record["status"] == "failed" and record["attempts"] == 2, record
    assert record["error"]["type"] == "ConnectError", record
    assert record["error"]["message"].startswith("gave up after 2 attempts: "), record
    assert "Connect call failed" in record["error"]["message"] or "refused" in record["error"]["message"]


def test_ctrl_c_mid_crawl_records_every_page_it_knew_and_resume_finishes(tmp_path, crawl_ns):
    """SPEC 6 for a crawl: each page fetched, being fetched or waiting has its line when the job
    is stopped (``cancelled`` for the undone), and the summary's total is their sum."""
    with SiteServer(pages=60) as site:
        job = crawl_job(tmp_path, [site.url("/")], max_pages=40, max_depth=50, per_host_rate=4, robots=False)
        out = tmp_path / "crawl.results.jsonl"
        code, stdout, stderr = submit_interrupted(
            job, crawl_ns, tmp_path, lambda: out.exists() and out.read_text().count("\n") >= 4, "--json"
        )
        assert code == 130, stderr
        summary = json.loads(stdout)
        recs = records(tmp_path)
        by_status = Counter(r["status"] for r in recs)
        assert by_status["cancelled"] > 0 and by_status["ok"] >= 4, by_status
        assert summary["cancelled"] == by_status["cancelled"] and summary["ok"] == by_status["ok"], summary
        assert summary["total"] == sum(summary[k] for k in ("ok", "failed", "skipped", "cancelled")), summary
        assert len({r["id"] for r in recs}) == len(recs) <= 40
        assert all(r["reason"] == "the job was cancelled" for r in recs if r["status"] == "cancelled")
        result = run_cli("submit", str(job), "--ns", crawl_ns, "--resume", "--json", cwd=tmp_path)
    assert result.returncode == 0, result
    finished = records(tmp_path)
    assert {r["status"] for r in finished} == {"ok"} and len(finished) == 40


def test_sigkill_one_crawler_mid_crawl_loses_no_page(tmp_path, nameserver, worker_factory):
    victim, _ = worker_factory(2, "--services", "crawl", "--crawl-concurrency", "4")
    with SiteServer(pages=400) as site:
        job = crawl_job(
            tmp_path, [site.url("/")], max_pages=1000, max_depth=50, per_host_rate=200, robots=False
        )
        proc = start_submit(job, nameserver, tmp_path, "--quiet")
        try:
            out = tmp_path / "crawl.results.jsonl"
            wait_for(lambda: out.exists() and out.read_text().count("\n") >= 40, 60, interval_s=0.05)
            victim.signal(signal.SIGKILL)
            proc.wait(timeout=120)
        finally:
            proc.kill()
            _, stderr = proc.communicate()
        assert proc.returncode == 0, stderr
    recs = records(tmp_path)
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids))
    assert {r["url"].split(str(site.port), 1)[1] for r in recs} == set(site.reachable())
    assert all(r["status"] == "ok" for r in recs)


def test_non_http_schemes_are_refused_and_never_read(tmp_path, crawl_ns):
    job = crawl_job(tmp_path, ["file:///etc/passwd"])
    result = run_cli("submit", str(job), "--ns", crawl_ns, cwd=tmp_path)
    assert result.returncode == 2 and "crawl.seeds[0]" in result.stderr
    with Cluster(crawl_ns) as cluster:
        with pytest.raises(TaskFailed) as refused:
            cluster.fetch("file:///etc/passwd")
        assert refused.value.type == "RefusedScheme"
        with SiteServer(pages=5) as site:
            redirected = site.url("/redirect-to?url=file:///etc/passwd")
            with pytest.raises(TaskFailed, match="file"):
                cluster.fetch(redirected)
            page = cluster.fetch(site.url("/page/0.html"))
            assert "ftp://127.0.0.1/file" not in page["links"]
            assert all(link.startswith("http") for link in page["links"])


def test_crawl_example_runs_against_a_local_site(tmp_path):
    example = Path(__file__).parents[2] / "examples" / "crawl.yaml"
    with SiteServer(pages=30) as site:
        job = tmp_path / "crawl.yaml"
        job.write_text(example.read_text().replace("127.0.0.1:8000", site.host))
        result = run_cli("submit", str(job), "--local", "2", "--json", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result
    summary = json.loads(result.stdout)
    assert summary["ok"] == len(site.reachable(max_depth=3, disallow=["/private/"]))
    assert summary["skipped"] == 1
