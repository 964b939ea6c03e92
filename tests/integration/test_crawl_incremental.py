"""Incremental crawls on a real local site: state in SQLite, conditional revisits, resume, sitemaps."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest

from pyrocluster import Cluster
from pyrocluster.local import ManagedProcess, start_nameserver, start_worker
from tests.conftest import run_cli, start_submit, wait_for
from tests.integration.test_crawl import crawl_job
from tests.integration.test_scheduler import ticks_of
from tests.sites import SiteServer

EXAMPLES = Path(__file__).parents[2] / "examples"


def records(tmp_path: Path) -> list[dict]:
    """The records written so far (the file may not exist yet, its last line may be half written)."""
    path = tmp_path / "crawl.results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def path_of(site: SiteServer, url: str) -> str:
    return url.split(str(site.port), 1)[1]


@pytest.fixture
def crawlers(worker_factory):
    return worker_factory(2, "--services", "crawl", "--crawl-concurrency", "8")


def test_second_crawl_asks_only_conditionally_and_finds_the_two_edited_pages(tmp_path, nameserver, crawlers):
    with SiteServer(pages=30) as site:
        job = crawl_job(tmp_path, [site.url("/")], state="site.sqlite", max_depth=50, per_host_rate=1000)
        first = run_cli("submit", str(job), "--ns", nameserver, cwd=tmp_path)
        assert first.returncode == 0, first
        first_ok = {r["url"] for r in records(tmp_path) if r["status"] == "ok"}
        assert all(r["result"]["changed"] for r in records(tmp_path) if r["status"] == "ok")
        site.reset()
        site.edit("/page/3.html")
        site.edit("/page/17.html")
        second = run_cli("submit", str(job), "--ns", nameserver, cwd=tmp_path)
        asked = site.request_headers
    assert second.returncode == 0, second
    recs = records(tmp_path)
    ok = {r["url"]: r for r in recs if r["status"] == "ok"}
    assert set(ok) == first_ok and len(ok) == 31
    assert [p for p, h in asked if "If-None-Match" not in h] == [], "an unconditional request in the revisit"
    assert sorted(p for p, _ in asked) == sorted(path_of(site, u) for u in ok), "each page asked once"
    changed = sorted(path_of(site, u) for u, r in ok.items() if r["result"]["changed"])
    assert changed == ["/page/17.html", "/page/3.html"]
    unchanged = [r for r in ok.values() if not r["result"]["changed"]]
    assert all(r["result"]["http_status"] == 304 for r in unchanged)
    assert ok[site.url("/page/5.html")]["result"]["title"] == "Page 5"  # from the state
    assert ok[site.url("/page/5.html")]["result"]["links"]


@pytest.mark.slow
def test_a_crawl_killed_mid_way_continues_without_asking_twice(tmp_path, nameserver, crawlers):
    with SiteServer(pages=60) as site:
        job = crawl_job(tmp_path, [site.url("/")], state="site.sqlite", max_depth=100, per_host_rate=10)
        proc = start_submit(job, nameserver, tmp_path)
        try:
            # SIGKILL between two requests (they start 100 ms apart): every page asked is recorded
            def settled_mid_crawl() -> bool:
                asked = [p for p in site.requests if p != "/robots.txt"]
                ok = [r for r in records(tmp_path) if r["status"] == "ok"]
                return 15 <= len(asked) == len(ok)

            wait_for(settled_mid_crawl, 30, interval_s=0.005, what="15 pages recorded")
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.communicate(timeout=10)
        first = site.requests
        with closing(sqlite3.connect(tmp_path / "site.sqlite")) as db:  # the lock went with the process
            kept = {path_of(site, url) for (url,) in db.execute("SELECT url FROM pages")}
        assert 15 <= len(kept) < 61
        again = run_cli("submit", str(job), "--ns", nameserver, "--resume", cwd=tmp_path)
        second = site.requests[len(first) :]
    assert again.returncode == 0, again
    assert sorted(set(second) & kept) == [], "a page the killed run had recorded was asked again"
    assert "/robots.txt" not in second  # kept in the state too
    twice = [p for p, n in Counter(first + second).items() if n > 1]
    in_flight_at_the_kill = set(first) - kept - {"/robots.txt"}
    assert set(twice) <= in_flight_at_the_kill and len(in_flight_at_the_kill) <= 1, (
        twice,
        in_flight_at_the_kill,
    )
    ok = {path_of(site, r["url"]) for r in records(tmp_path) if r["status"] == "ok"}
    assert ok == {"/", *(f"/page/{i}.html" for i in range(60))}


def test_revisit_new_asks_only_what_the_state_never_saw_and_all_asks_everything(
    tmp_path, nameserver, crawlers
):
    state = str(tmp_path / "site.sqlite")
    with SiteServer(pages=20, robots=None) as site, Cluster(nameserver) as cluster:
        capped = cluster.crawl(site.url("/"), max_depth=50, max_pages=8, state=state)
        known = {path_of(site, r["url"]) for r in capped if r["status"] == "ok"}
        assert len(known) == 8
        site.reset()
        new = cluster.crawl(site.url("/"), max_depth=50, state=state, revisit="new")
        everything = {r["url"]: r for r in new}
        asked = [p for p in site.requests if p != "/robots.txt"]
        assert {path_of(site, u) for u in everything} == set(site.reachable())
        assert sorted(asked) == sorted(set(site.reachable()) - known)
        assert {path_of(site, u) for u, r in everything.items() if not r["result"]["changed"]} == known
        site.reset()
        site.edit("/")
        again = list(cluster.crawl(site.url("/"), max_depth=50, state=state, revisit="all"))
        headers = site.request_headers
    assert {r["url"] for r in again} == set(everything)
    assert sorted(p for p, _ in headers) == sorted(site.reachable())
    assert [p for p, h in headers if "If-None-Match" in h or "If-Modified-Since" in h] == []
    assert {path_of(site, r["url"]) for r in again if r["result"]["changed"]} == {"/"}


def test_a_gzip_sitemap_index_finds_pages_linked_from_nowhere_and_lastmod_spares_them(
    tmp_path, nameserver, crawlers
):
    state = str(tmp_path / "site.sqlite")
    options = dict(max_depth=50, state=state, sitemaps=True)
    with SiteServer(pages=5, orphans=4) as site, Cluster(nameserver) as cluster:
        first = {
            path_of(site, r["url"]) for r in cluster.crawl(site.url("/"), **options) if r["status"] == "ok"
        }
        assert {f"/orphan/{i}.html" for i in range(4)} <= first
        assert site.count("/sitemap-index.xml.gz") == 1 and site.count("/sitemap-orphans.xml.gz") == 1
        site.reset()
        second = {r["url"]: r for r in cluster.crawl(site.url("/"), **options)}
        asked = site.requests
    assert {path_of(site, u) for u, r in second.items() if r["status"] == "ok"} == first
    assert not any(p.startswith("/orphan/") for p in asked), "a page whose lastmod is old was asked again"
    assert all(not second[site.url(f"/orphan/{i}.html")]["result"]["changed"] for i in range(4))


def results_of(cwd: Path, tick: str) -> list[dict]:
    stamp = tick.replace("-", "").replace(":", "")
    lines = (cwd / "runs" / "nightly-crawl" / f"{stamp}.results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_the_nightly_crawl_example_asks_only_conditionally_from_its_second_run(
    processes, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    ns_proc, ns = start_nameserver()
    processes.add(ns_proc)
    processes.add(start_worker(ns, ["--services", "crawl"]))
    with SiteServer(pages=30) as site:
        for name in ("incremental-crawl.yaml", "nightly-crawl.yaml"):
            text = (EXAMPLES / name).read_text().replace("127.0.0.1:8000", site.host)
            (tmp_path / name).write_text(text.replace('cron: "30 2 * * *"', "every: 2s"))
        sched = processes.add(
            ManagedProcess(
                ["scheduler", str(tmp_path / "nightly-crawl.yaml"), "--ns", ns, "--name", "night"],
                env={**os.environ, "SITE_TOKEN": "Bearer t0k3n"},
            )
        )
        sched.wait_ready()

        def two_runs() -> list[dict] | None:
            ended = [t for t in ticks_of(tmp_path, "nightly-crawl") if t["run_status"]]
            return ended[:2] if len(ended) >= 2 else None

        ran = wait_for(two_runs, 30, what="two nightly runs")
        asked = site.request_headers
    assert [t["run_status"] for t in ran] == ["ok", "ok"], ran
    first, second = (results_of(tmp_path, t["tick"]) for t in ran)
    assert len(first) == len(second) >= 31
    assert all(r["result"]["changed"] for r in first if r["status"] == "ok")
    assert all(r["result"]["http_status"] == 304 for r in second if r["status"] == "ok")
    assert all(h.get("Authorization") == "Bearer t0k3n" for _, h in asked)


def test_records_with_a_state_come_out_while_a_page_still_hangs(tmp_path, nameserver, crawlers):
    # With a state file records wait for a commit that covers them (every few records or few ms),
    # never for the crawl's end: the pages done come out while another fetch is still under way.
    with SiteServer(pages=3, slow_s=60) as site, Cluster(nameserver) as cluster:
        crawl = cluster.crawl(  # one request at a time (50 ms apart), so no page shares /slow's batch
            [site.url("/slow"), site.url("/")],
            state=str(tmp_path / "s.sqlite"),
            max_depth=1,
            robots=False,
            per_host_rate=20,
        )
        try:
            got = [next(crawl) for _ in range(3)]
        finally:
            crawl.close()  # stops the crawl, the hanging fetch with it
        assert "/slow" in site.requests and "/slow" not in {path_of(site, r["url"]) for r in got}
        assert all(r["status"] == "ok" for r in got)
        with closing(sqlite3.connect(tmp_path / "s.sqlite")) as db:
            kept = {path_of(site, url) for (url,) in db.execute("SELECT url FROM pages")}
        assert {path_of(site, r["url"]) for r in got} <= kept  # each record in the state before it came out
