"""Revisit rules with no I/O: what to ask again of a page an earlier crawl kept, and whether it changed."""

from __future__ import annotations

from pyrocluster.crawl.revisit import CONDITIONAL, FETCH, REUSE, Stored, changed, plan, unchanged_result

STORED = Stored('"abc"', "Mon, 01 Jan 2001 00:00:00 GMT", "h1", 1000.0, {"title": "T", "links": ["x"]})


def test_a_url_never_fetched_is_fetched_whatever_the_mode():
    for mode in ("changed", "all", "new"):
        assert plan(mode, None).action == FETCH


def test_changed_asks_conditionally_with_the_stored_validators():
    visit = plan("changed", STORED)
    assert visit.action == CONDITIONAL
    assert visit.headers == {"If-None-Match": '"abc"', "If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
    no_validators = Stored(None, None, "h1", 1000.0, {})
    assert plan("changed", no_validators).action == FETCH  # the body hash decides then


def test_a_sitemap_lastmod_not_newer_than_the_fetch_means_no_request():
    assert plan("changed", STORED, lastmod=999.0).action == REUSE
    assert plan("changed", STORED, lastmod=1000.0).action == REUSE
    assert plan("changed", STORED, lastmod=1001.0).action == CONDITIONAL


def test_all_fetches_unconditionally_and_new_not_at_all():
    assert plan("all", STORED) == plan("all", None)
    assert plan("all", STORED).headers == {}
    assert plan("new", STORED).action == REUSE


def test_changed_compares_body_hashes_and_an_unchanged_record_comes_from_the_state():
    assert changed(None, "h1") and changed(STORED, "h2") and not changed(STORED, "h1")
    result = unchanged_result(STORED, 304, 1.5)
    assert result == {"title": "T", "links": ["x"], "http_status": 304, "elapsed_ms": 1.5, "changed": False}
