"""The crawl state file: schema version, runs continued or finished, one crawl at a time, bad files."""

from __future__ import annotations

import sqlite3

import pytest

from pyrocluster.crawl.state import SCHEMA_VERSION, CrawlState
from pyrocluster.errors import ConfigError


def record(url: str) -> dict:
    return {"url": url, "status": "ok", "result": {"title": "T", "links": ["http://a.com/2"]}}


def test_a_run_stopped_before_its_end_is_continued_and_a_finished_one_starts_a_new_run(tmp_path):
    path = tmp_path / "s.sqlite"
    clock = iter(range(1000, 2000))
    state = CrawlState(path, now=lambda: float(next(clock)))
    assert not state.continuing
    state.save_page("http://a.com/", 0, record("http://a.com/"), sha256="h", etag='"e"')
    state.save_queued([("http://a.com/2", 1)])
    state.save_robots("a.com", "User-agent: *\n")
    state.commit()
    state._db.close()  # as if killed: no finish, no close
    again = CrawlState(path)
    assert again.continuing and again.run == state.run
    assert again.done() == [("http://a.com/", 0, record("http://a.com/"))]
    assert again.queued() == [("http://a.com/2", 1)]
    assert again.stored("http://a.com/") is None  # fetched by this very run
    assert again.robots("a.com", 1e12) == ("User-agent: *\n",)
    again.finish()
    again.close()
    later = CrawlState(path)
    assert not later.continuing and later.run == state.run + 1 and later.queued() == []
    stored = later.stored("http://a.com/")
    assert stored is not None and stored.etag == '"e"' and stored.sha256 == "h"
    assert stored.result["links"] == ["http://a.com/2"]
    later.close()


def test_a_second_crawl_on_the_same_file_is_refused(tmp_path):
    first = CrawlState(tmp_path / "s.sqlite")
    with pytest.raises(ConfigError, match="in use by another crawl"):
        CrawlState(tmp_path / "s.sqlite")
    first.close()
    CrawlState(tmp_path / "s.sqlite").close()


def test_a_newer_schema_or_another_kind_of_file_is_refused(tmp_path):
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match="newer than this pyrocluster"):
        CrawlState(newer)
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, just some text that is long enough" * 20)
    with pytest.raises(ConfigError, match="not a crawl state file"):
        CrawlState(text)
    with pytest.raises(ConfigError, match="crawl state"):
        CrawlState(tmp_path / "no-such-dir" / "s.sqlite")


def test_the_file_is_wal_and_at_the_current_schema(tmp_path):
    CrawlState(tmp_path / "s.sqlite").close()
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_pages_written_at_the_commit_read_as_written_before_it(tmp_path):
    # Page writes wait for the commit (one executemany a round): every read sees them all the same,
    # in the order they were made, and a close without a commit keeps them.
    path = tmp_path / "s.sqlite"
    first = CrawlState(path)
    for url in ("http://a.com/", "http://a.com/2"):
        first.save_page(url, 0, record(url), sha256="old", etag='"1"')
    first.finish()
    first.close()
    state = CrawlState(path)
    assert state.stored("http://a.com/").sha256 == "old"
    state.save_page("http://a.com/", 1, record("http://a.com/"), sha256="new", etag='"2"')
    assert state.stored("http://a.com/") is None  # replaced by this run, not committed yet
    assert state.stored("http://a.com/2").sha256 == "old"
    state.save_page("http://a.com/2", 2, record("http://a.com/2"), sha256="old", fetched=False)  # a 304
    assert sorted(state.done()) == [
        ("http://a.com/", 1, record("http://a.com/")),
        ("http://a.com/2", 2, record("http://a.com/2")),
    ]
    state.save_page("http://a.com/3", 1, record("http://a.com/3"), sha256="c")
    assert state.page_count() == 3
    state.save_page("http://a.com/4", 1, record("http://a.com/4"), sha256="d")
    state.close()  # not finished, not committed since the last read: the pages stay all the same
    again = CrawlState(path)
    assert again.continuing and sorted(url for url, _, _ in again.done())[-1] == "http://a.com/4"
    etags = dict(again._db.execute("SELECT url, etag FROM pages").fetchall())
    again.close()
    assert etags == {
        "http://a.com/": '"2"',
        "http://a.com/2": '"1"',
        "http://a.com/3": None,
        "http://a.com/4": None,
    }


def test_a_fresh_file_knows_no_page_and_a_later_run_knows_the_earlier_ones(tmp_path):
    path = tmp_path / "s.sqlite"
    state = CrawlState(path)
    state.save_page("http://a.com/", 0, record("http://a.com/"), sha256="h")
    state.commit()
    assert state.stored("http://a.com/") is None  # only earlier runs' pages are "stored"
    state.finish()
    state.close()
    later = CrawlState(path)
    assert later.stored("http://a.com/").sha256 == "h"
    later.close()
