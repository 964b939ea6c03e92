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
