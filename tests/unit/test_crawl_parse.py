"""Page parsing with no sockets: links resolve exactly as urljoin does, charsets decode."""

from __future__ import annotations

import html
from urllib.parse import urljoin

from hypothesis import given, settings
from hypothesis import strategies as st
from selectolax.lexbor import LexborHTMLParser

from pyrocluster.crawl.parse import extract_links, fill_record

BASE = "http://h.com:81/dir/page.html"
HREFS = st.lists(
    st.one_of(
        st.sampled_from(["/a", "/a/../b", "//o.com/x", "/a?q=1#f", "/", "/./x", "/a\\b", "x/../y", "?q"]),
        st.text(alphabet="/.?#=ab\\%:;\t\n ", min_size=1, max_size=12),
    ),
    max_size=8,
)


@settings(max_examples=500, deadline=None)
@given(HREFS)
def test_links_resolve_as_urljoin_does(hrefs: list[str]) -> None:
    page = "".join(f'<a href="{html.escape(h, quote=True)}">x</a>' for h in hrefs)
    tree = LexborHTMLParser(page)
    expected: dict[str, None] = {}
    for node in tree.css("a[href]"):
        href = (node.attributes.get("href") or "").strip()
        if not href or href[0] == "#":
            continue
        joined = urljoin(BASE, href).partition("#")[0]
        if joined.startswith(("http://", "https://")):
            expected[joined] = None
    assert extract_links(tree, BASE) == list(expected)


def test_utf8_is_parsed_from_bytes_and_other_charsets_are_decoded() -> None:
    for ctype, body in [
        ("text/html; charset=utf-8", "<title>Café \xff</title>".encode() + b"\xfe"),
        ("text/html; charset=iso-8859-1", "<title>Café</title>".encode("latin-1")),
    ]:
        record = {"content_type": ctype, "final_url": BASE, "title": None, "links": []}
        page = fill_record(record, body, True, {})
        assert page["title"].startswith("Café")
