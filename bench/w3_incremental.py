"""W3 incremental: the W3 site crawled again with a ``state`` file, nothing changed, on nginx.

nginx answers conditional requests for static files (ETag, Last-Modified, 304), as most sites'
static pages do. Each repetition crawls the whole site through ``cluster.crawl`` on two local
workers (``--services crawl``, no rate limit, robots.txt off):

* the first crawl without state (the baseline of the state's cost);
* the first crawl with a fresh state file (records, validators and the frontier written as it goes);
* the second crawl with that file: every page asked with ``If-None-Match``, every answer a 304.

It reports wall times, the body bytes nginx sent (its access log), the speed-up of the second
crawl and the state file's size per page.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Context
from bench.report import BASE, INFO, PYRO
from bench.site import Site

NAME = "W3 incremental"
MAX_DEPTH = 50
"""Deep enough never to bind: the crawl must be complete."""


def crawl(cluster: Any, root: str, n: int, state: str | None) -> tuple[float, int]:
    """One whole crawl: its wall time and the number of pages that were unchanged."""
    start = time.perf_counter()
    ok = unchanged = 0
    options: dict[str, Any] = {"state": state} if state else {}
    for record in cluster.crawl(
        [root], max_pages=n + 100, max_depth=MAX_DEPTH, per_host_rate=None, robots=False, **options
    ):
        if record.get("status") == "ok":
            ok += 1
            unchanged += record["result"].get("changed") is False
    wall = time.perf_counter() - start
    if ok != n:
        raise AssertionError(f"{NAME}: {ok} pages crawled, expected {n}")
    return wall, unchanged


def run(ctx: Context) -> None:
    """Measure and add the rows and targets."""
    from pyrocluster.coordinator.cluster import Cluster

    n = ctx.sizes.w3_pages
    reps = ctx.sizes.reps if not ctx.report.quick else 2
    site = Site(n, log_bytes=True)
    rep = ctx.report
    if site.warning:
        rep.note(NAME, site.warning)
    walls: dict[str, list[float]] = {"off": [], "first": [], "second": []}
    sent: dict[str, list[float]] = {"first": [], "second": []}
    per_page: list[float] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-state-"))
    cluster = Cluster.local(workers=2, worker_args=["--services", "crawl"])
    try:
        crawl(cluster, site.url, n, None)  # warm-up: connections, page cache
        for r in range(reps):
            state = str(tmp / f"rep{r}.sqlite")
            walls["off"].append(crawl(cluster, site.url, n, None)[0])
            before = site.body_bytes()[0]
            walls["first"].append(crawl(cluster, site.url, n, state)[0])
            middle = site.body_bytes()[0]
            wall, unchanged = crawl(cluster, site.url, n, state)
            walls["second"].append(wall)
            after, statuses = site.body_bytes()
            if unchanged != n:
                raise AssertionError(f"{NAME}: {unchanged} of {n} pages unchanged on the second crawl")
            sent["first"].append(middle - before)
            sent["second"].append(after - middle)
            per_page.append(os.path.getsize(state) / n)
            ctx.log(
                f"  rep {r + 1}/{reps}: no state {walls['off'][-1]:.2f} s, first {walls['first'][-1]:.2f} s, "
                f"second {wall:.2f} s; body bytes {middle - before:,} then {after - middle:,}; "
                f"statuses so far {dict(statuses)}"
            )
    finally:
        cluster.close()
        site.close()
    rep.add(NAME, f"site: {n} pages, {site.server}", INFO, "pages", [n])
    off = rep.add(NAME, "first crawl, no state", BASE, "s", walls["off"])
    first = rep.add(NAME, "first crawl, state file", PYRO, "s", walls["first"])
    second = rep.add(NAME, "second crawl, state file, nothing changed (all 304)", PYRO, "s", walls["second"])
    b1 = rep.add(NAME, "body bytes sent, first crawl", INFO, "bytes", sent["first"])
    b2 = rep.add(NAME, "body bytes sent, second crawl", INFO, "bytes", sent["second"])
    rep.add(NAME, "state file size per page", INFO, "bytes", per_page)
    speedup = rep.ratio(first, second)
    rep.target(
        "W3 second crawl with state vs the first",
        "wall time >= 5x faster",
        ">=",
        5.0,
        speedup,
        detail=f"best-of-n {rep.best_ratio(first, second) or 0:.1f}x",
    )
    saved = None if not b1.median else 1 - (b2.median or 0) / b1.median
    rep.target("W3 second crawl body bytes", ">= 95% fewer", ">=", 0.95, saved)
    cost = rep.ratio(off, first)  # seconds: no-state time over state time = state's speed ratio
    rep.target("W3 first crawl with state vs without", "speed ratio >= 0.9", ">=", 0.9, cost)
