"""W3 crawl: a generated N-page site served by nginx, crawled completely, in pages per second.

pyrocluster: ``cluster.crawl([root], ...)`` on two local workers offering only the crawl
service (default crawl concurrency). Baselines, each fetching with httpx and extracting links
with selectolax:

* a single-process crawler, sequential and with a thread pool sharing one pooled ``httpx.Client``;
* a ``multiprocessing.Pool`` crawler: breadth-first by levels, each level fetched with
  ``pool.map`` (one pooled ``httpx.Client`` per process).

Every crawler must find exactly the N pages, or the run fails.
"""

from __future__ import annotations

import queue
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from selectolax.lexbor import LexborHTMLParser

from bench.common import Context
from bench.report import BASE, INFO, PYRO
from bench.site import Site

NAME = "W3 crawl"
THREADS = 16
"""Threads of the single-process crawler (the workers' default crawl concurrency)."""
POOL_PROCESSES = 4
"""Processes of the multiprocessing.Pool crawler (2 per core: fetching waits on the network too)."""
MAX_DEPTH = 50
"""Deep enough never to bind: the crawl must be complete."""

_client: httpx.Client | None = None


def _new_client(connections: int) -> httpx.Client:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.Client(limits=limits, timeout=10.0, trust_env=False, follow_redirects=True)


def fetch_page(url: str, client: httpx.Client | None = None) -> tuple[str, int, str, list[str]]:
    """Fetch one page: its URL, HTTP status, title and absolute links (fragments removed)."""
    global _client
    if client is None:
        if _client is None:
            _client = _new_client(1)
        client = _client
    response = client.get(url)
    tree = LexborHTMLParser(response.content)
    title_node = tree.css_first("title")
    links = []
    for node in tree.css("a[href]"):
        href = node.attributes.get("href")
        if href:
            links.append(urljoin(url, href).partition("#")[0])
    return url, response.status_code, title_node.text() if title_node else "", links


def crawl_threads(root: str, max_pages: int, threads: int = THREADS) -> int:
    """Crawl with ``threads`` threads in this process, fed continuously; the number of pages fetched."""
    host = urlsplit(root).netloc
    seen = {root}
    pages = 0
    finished: queue.SimpleQueue[Future[tuple[str, int, str, list[str]]]] = queue.SimpleQueue()
    with _new_client(threads) as client, ThreadPoolExecutor(threads) as pool:

        def submit(url: str) -> None:
            pool.submit(fetch_page, url, client).add_done_callback(finished.put)

        submit(root)
        outstanding = 1
        while outstanding:
            _, status, _, links = finished.get().result()
            outstanding -= 1
            pages += status == 200
            for link in links:
                if link not in seen and urlsplit(link).netloc == host and len(seen) < max_pages:
                    seen.add(link)
                    submit(link)
                    outstanding += 1
    return pages


def crawl_pool(pool: Any, root: str, max_pages: int, processes: int) -> int:
    """Crawl breadth-first by levels with ``pool.map``; the number of pages fetched."""
    host = urlsplit(root).netloc
    seen = {root}
    level = [root]
    pages = 0
    depth = 0
    while level and depth <= MAX_DEPTH:
        nxt = []
        for _, status, _, links in pool.map(
            fetch_page, level, chunksize=max(1, len(level) // (processes * 8))
        ):
            pages += status == 200
            for link in links:
                if link not in seen and urlsplit(link).netloc == host and len(seen) < max_pages:
                    seen.add(link)
                    nxt.append(link)
        level = nxt
        depth += 1
    return pages


def tree_cpu_s() -> float:
    """CPU seconds used so far by this process and its descendants (workers, pool, nginx)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in (me, *me.children(recursive=True)):
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def crawl_cluster(cluster: Any, root: str, max_pages: int) -> int:
    """Crawl through pyrocluster; the number of ok page records."""
    ok = 0
    for record in cluster.crawl(
        [root], max_pages=max_pages, max_depth=MAX_DEPTH, per_host_rate=None, robots=False
    ):
        if record.get("status") == "ok":
            ok += 1
    return ok


def run(ctx: Context) -> None:
    """Measure W3 and add its rows and target."""
    from pyrocluster.coordinator.cluster import Cluster

    n = ctx.sizes.w3_pages
    reps = ctx.sizes.reps if not ctx.report.quick else 2
    max_pages = n + 100
    ctx.log(f"{NAME}: writing a {n}-page site and starting its server")
    site = Site(n)
    rep = ctx.report
    if site.warning:
        rep.note(NAME, site.warning)
    ctx.log(f"{NAME}: served by {site.server} at {site.url}")
    pool = ctx.pool(POOL_PROCESSES)
    cluster = None
    has_crawl = hasattr(Cluster, "crawl")
    samples: dict[str, list[float]] = {"pyro": [], "threads": [], "sequential": [], "pool": []}
    cpu_ms: dict[str, list[float]] = {k: [] for k in samples}

    def measure(key: str, fn: Any) -> None:
        cpu0 = tree_cpu_s()
        start = time.perf_counter()
        pages = fn()
        wall = time.perf_counter() - start
        cpu_ms[key].append((tree_cpu_s() - cpu0) * 1000 / max(1, pages))
        if pages != n:
            raise AssertionError(f"{NAME} {key}: {pages} pages crawled, expected {n}")
        samples[key].append(pages / wall)

    try:
        if has_crawl:
            ctx.log(f"{NAME}: starting a local cluster: 2 workers, --services crawl")
            cluster = Cluster.local(workers=2, worker_args=["--services", "crawl"])
        variants = {
            "threads": lambda: crawl_threads(site.url, max_pages),
            "sequential": lambda: crawl_threads(site.url, max_pages, 1),
            "pool": lambda: crawl_pool(pool, site.url, max_pages, POOL_PROCESSES),
        }
        if cluster is not None:
            variants = {"pyro": lambda: crawl_cluster(cluster, site.url, max_pages), **variants}
        for name, fn in variants.items():  # warm-up: connections, caches, page cache
            ctx.log(f"  warm-up: {name}")
            fn()
        for r in range(reps):
            for name, fn in variants.items():
                measure(name, fn)
            ctx.log(
                f"  rep {r + 1}/{reps}: "
                + ", ".join(f"{k} {v[-1]:.0f} pages/s" for k, v in samples.items() if v)
            )
    finally:
        if cluster is not None:
            cluster.close()
        site.close()
    u = "pages/s"
    rep.add(NAME, f"site: {n} pages, {site.server}", INFO, "pages", [n])
    pr = None
    if has_crawl:
        pr = rep.add(NAME, "cluster.crawl, 2 workers (crawl service only)", PYRO, u, samples["pyro"])
    else:
        rep.note(NAME, "Cluster.crawl does not exist yet: the pyrocluster side of W3 was not run")
    rep.add(
        NAME,
        "one process, sequential (one fetch at a time), httpx + selectolax",
        BASE,
        u,
        samples["sequential"],
    )
    rep.add(NAME, f"one process, {THREADS} threads, httpx + selectolax", BASE, u, samples["threads"])
    base = rep.add(
        NAME,
        f"multiprocessing.Pool({POOL_PROCESSES}) BFS by levels, httpx + selectolax",
        BASE,
        u,
        samples["pool"],
    )
    labels = {
        "pyro": "cluster.crawl",
        "sequential": "sequential",
        "threads": f"{THREADS} threads",
        "pool": f"Pool({POOL_PROCESSES})",
    }
    cpu_rows = {}
    for key, label in labels.items():
        if cpu_ms[key]:
            cpu_rows[key] = rep.add(
                NAME, f"CPU per page, {label} (all our processes and nginx)", INFO, "ms", cpu_ms[key]
            )
    rep.target(
        "W3 crawl vs the multiprocessing.Pool crawler",
        "pages/s ratio >= 1.0",
        ">=",
        1.0,
        rep.ratio(pr, base),
        detail=f"best-of-n {rep.best_ratio(pr, base) or 0:.2f}x; server: {site.server}",
    )
    rep.target(
        "W3 crawl CPU per page vs the multiprocessing.Pool crawler",
        "CPU per page ratio <= 1.0",
        "<=",
        1.0,
        rep.ratio(cpu_rows.get("pyro"), cpu_rows.get("pool")),
        detail="process CPU time of every process of each crawler, and nginx's",
    )
