"""Read sitemaps (sitemaps.org 0.9): URL sets and indexes, gzip or not, bounded (pure: no I/O).

XML is read with the standard library's expat (2.4+ refuses entity-expansion bombs and
ElementTree never loads external entities); the decompressed size is capped before parsing.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from xml.etree import ElementTree

from protego import Protego

from pyrocluster.crawl.urls import key_of_normal, normalize_url

MAX_SITEMAP_BYTES = 10 * 1024 * 1024
"""Largest sitemap read, compressed or not (sitemaps.org allows 50 MB; few come near)."""
MAX_SITEMAP_URLS = 50_000
"""Most URLs taken from one sitemap (the sitemaps.org limit)."""
MAX_SITEMAPS = 100
"""Most sitemap files one crawl reads (indexes included)."""


@dataclass
class Sitemap:
    """What one sitemap file lists: pages with their ``lastmod`` (unix time or None), and sitemaps."""

    pages: list[tuple[str, float | None]] = field(default_factory=list)
    sitemaps: list[str] = field(default_factory=list)
    error: str | None = None


def parse_lastmod(text: str | None) -> float | None:
    """A W3C datetime (``2024-05-01``, ``2024-05-01T10:00:00+02:00``, ...) as unix time, or None."""
    if not text:
        return None
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _inflate(body: bytes) -> bytes:
    """``body`` un-gzipped when it is gzip data, never more than ``MAX_SITEMAP_BYTES``."""
    if body[:2] != b"\x1f\x8b":
        return body[:MAX_SITEMAP_BYTES]
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    data = inflater.decompress(body, MAX_SITEMAP_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError(f"more than {MAX_SITEMAP_BYTES} bytes once decompressed")
    return data


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def read_sitemap(body: bytes) -> Sitemap:
    """The pages and child sitemaps of one sitemap file (``error`` set when it cannot be read)."""
    out = Sitemap()
    try:
        root = ElementTree.fromstring(_inflate(body))
    except (ValueError, zlib.error, ElementTree.ParseError) as exc:
        out.error = f"not a readable sitemap: {exc}"
        return out
    kind = _local(root.tag)
    if kind not in ("urlset", "sitemapindex"):
        out.error = f"not a sitemap: root element <{kind}>"
        return out
    for entry in root:
        loc = lastmod = None
        for child in entry:
            name = _local(child.tag)
            if name == "loc":
                loc = (child.text or "").strip()
            elif name == "lastmod":
                lastmod = child.text
        if not loc:
            continue
        if kind == "sitemapindex":
            out.sitemaps.append(loc)
        else:
            out.pages.append((loc, parse_lastmod(lastmod)))
        if len(out.pages) + len(out.sitemaps) >= MAX_SITEMAP_URLS:
            break
    return out


class SitemapFinder:
    """Which sitemap files a crawl reads (within ``allow``, each once, at most ``MAX_SITEMAPS``).

    ``lastmod`` maps each page URL found to its sitemap ``lastmod`` (unix time).
    """

    def __init__(self, allow: Iterable[str]) -> None:
        self.allow = set(allow)
        self.asked: set[str] = set()
        self.lastmod: dict[str, float] = {}

    def for_host(self, on_host: str, robots_text: str | None) -> list[str]:
        """The sitemaps to fetch for a host: its robots.txt ``Sitemap:`` lines and /sitemap.xml."""
        listed: list[str] = []
        if robots_text:
            try:
                listed = list(Protego.parse(robots_text).sitemaps)
            except Exception:  # an unparsable robots.txt names no sitemap
                listed = []
        return self._new(["/sitemap.xml", *listed], on_host)

    def read(self, url: str, body: bytes) -> tuple[list[str], list[str]]:
        """A sitemap's body: the page URLs it lists (normalised) and the sitemaps still to fetch."""
        sitemap = read_sitemap(body)
        pages = []
        for loc, lastmod in sitemap.pages:
            normal = normalize_url(loc, url)
            if normal is None:
                continue
            if lastmod is not None:
                self.lastmod[normal] = lastmod
            pages.append(normal)
        return pages, self._new(sitemap.sitemaps, url)

    def _new(self, locs: Iterable[str], base: str) -> list[str]:
        out = []
        for loc in locs:
            normal = normalize_url(loc, base)
            if normal is None or normal in self.asked or key_of_normal(normal) not in self.allow:
                continue
            if len(self.asked) >= MAX_SITEMAPS:
                break
            self.asked.add(normal)
            out.append(normal)
        return out
