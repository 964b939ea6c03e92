"""Reading sitemaps with no I/O: URL sets, indexes, gzip, lastmod, bounds, hostile input."""

from __future__ import annotations

import gzip

from pyrocluster.crawl.sitemaps import (
    MAX_SITEMAP_BYTES,
    MAX_SITEMAP_URLS,
    MAX_SITEMAPS,
    SitemapFinder,
    parse_lastmod,
    read_sitemap,
)

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def test_a_urlset_gives_pages_and_their_lastmod():
    body = (
        f"<urlset {NS}><url><loc> http://a.com/1 </loc><lastmod>2024-05-01</lastmod></url>"
        "<url><loc>http://a.com/2</loc></url><url><lastmod>2024-05-01</lastmod></url></urlset>"
    ).encode()
    sitemap = read_sitemap(body)
    assert sitemap.error is None and sitemap.sitemaps == []
    assert sitemap.pages == [("http://a.com/1", parse_lastmod("2024-05-01")), ("http://a.com/2", None)]


def test_a_gzip_index_gives_sitemaps():
    body = gzip.compress(
        f"<sitemapindex {NS}><sitemap><loc>http://a.com/s.xml.gz</loc></sitemap></sitemapindex>".encode()
    )
    assert read_sitemap(body).sitemaps == ["http://a.com/s.xml.gz"]


def test_lastmod_forms():
    assert parse_lastmod("2024-05-01T10:00:00Z") == parse_lastmod("2024-05-01T12:00:00+02:00")
    assert parse_lastmod("2024-05-01") == 1714521600.0
    assert parse_lastmod("yesterday") is None and parse_lastmod(None) is None


def test_bounds_and_hostile_input():
    bomb = gzip.compress(b"<urlset>" + b" " * (MAX_SITEMAP_BYTES + 10) + b"</urlset>")
    assert "decompressed" in (read_sitemap(bomb).error or "")
    entities = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(
            f'<!ENTITY a{i} "{"&a;" * 10 if i == 0 else f"&a{i - 1};" * 10}">'.encode() for i in range(8)
        )
        + b"]><urlset><url><loc>&a7;</loc></url></urlset>"
    )
    assert read_sitemap(entities).error is not None  # expat refuses the amplification
    many = f"<urlset {NS}>" + "<url><loc>http://a.com/x</loc></url>" * (MAX_SITEMAP_URLS + 5) + "</urlset>"
    assert len(read_sitemap(many.encode()).pages) == MAX_SITEMAP_URLS
    assert read_sitemap(b"<html></html>").error == "not a sitemap: root element <html>"
    assert read_sitemap(b"\x1f\x8bnot gzip").error is not None


def test_the_finder_reads_each_sitemap_once_within_allow_and_keeps_lastmod():
    finder = SitemapFinder({"a.com"})
    robots = "User-agent: *\nSitemap: http://a.com/s1.xml\nSitemap: http://b.com/s.xml\n"
    assert finder.for_host("http://a.com/robots.txt", robots) == [
        "http://a.com/sitemap.xml",
        "http://a.com/s1.xml",
    ]
    assert finder.for_host("http://a.com/robots.txt", robots) == []  # each once
    entries = "<sitemap><loc>/s2.xml</loc></sitemap><sitemap><loc>/s1.xml</loc></sitemap>"
    index = f"<sitemapindex {NS}>{entries}</sitemapindex>"
    assert finder.read("http://a.com/s1.xml", index.encode()) == ([], ["http://a.com/s2.xml"])
    entries = "<url><loc>/p</loc><lastmod>2024-05-01</lastmod></url><url><loc>mailto:x</loc></url>"
    urlset = f"<urlset {NS}>{entries}</urlset>"
    assert finder.read("http://a.com/s2.xml", urlset.encode()) == (["http://a.com/p"], [])
    assert finder.lastmod == {"http://a.com/p": parse_lastmod("2024-05-01")}


def test_the_finder_reads_at_most_max_sitemaps():
    finder = SitemapFinder({"a.com"})
    entries = "".join(f"<sitemap><loc>/s{i}.xml</loc></sitemap>" for i in range(MAX_SITEMAPS + 50))
    _, more = finder.read("http://a.com/index.xml", f"<sitemapindex {NS}>{entries}</sitemapindex>".encode())
    assert len(more) == MAX_SITEMAPS
