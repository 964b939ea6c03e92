"""Terminal rendering at 80 and 200 columns: nothing cut, progress on whole lines."""

from __future__ import annotations

from rich.console import Console

from pyrocluster import render

WORKERS = [
    {
        "name": name,
        "address": address,
        "services": ["compute", "crawl"],
        "tags": ["gpu"],
        "state": state,
        "slots": 8,
        "busy": 3,
        "done": 123456,
        "failed": 42,
        "mean_ms": 12.5,
        "uptime_s": 4000.0,
        "cpu_percent": 95.0,
        "rss_mb": 1234.0,
        "tasks": ["add", "echo", "fib"],
        "resources": {
            "cpu": {"total": 8, "used": 3},
            "memory": {"total": 32 * 2**30, "used": 4 * 2**30},
            "licence": {"total": 2, "used": 1},
        },
    }
    for name, address, state in (
        ("alpha-node-01-123456", "192.168.100.200:40111", "ready"),
        ("beta-2", "127.0.0.1:9", "unreachable"),
        ("gamma-3", "10.0.0.3:41234", "draining"),
    )
]
STATUS = {
    "nameserver": {"address": "192.168.100.1:9090", "reachable": True},
    "workers": WORKERS,
    "jobs": [
        {
            "name": "nightly-crawl-of-the-shop",
            "done": 500,
            "total": 20000,
            "failed": 3,
            "rate": 81.5,
            "state": "running",
        },
        {"name": "demo", "done": 12, "total": 12, "failed": 1, "rate": 300.0, "state": "finished"},
    ],  # fmt: skip
    "schedules": [
        {
            "name": "nightly",
            "next_fire": "2026-12-02T03:00:00Z",
            "last_fire": "2026-12-01T03:00:00Z",
            "last_status": "ok",
            "leader": "sched-a",
        }
    ],  # fmt: skip
}
SNAP = {
    "name": "nightly-crawl-of-the-shop",
    "total": 20000,
    "done": 12345,
    "ok": 12000,
    "failed": 300,
    "queued": 4500,
    "skipped": 45,
    "retried": 17,
    "in_flight": 64,
    "rate": 812.0,
    "eta_s": 3600.0,
    "per_worker": {"alpha-node-01-123456": 6000, "beta-2": 6000},
}


def rendered(renderable, width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None, force_terminal=False)
    console.print(renderable)
    return console.export_text().splitlines()


def lines_with(lines: list[str], *words: str) -> list[str]:
    return [line for line in lines if all(w in line for w in words)]


def test_status_at_80_columns_keeps_names_addresses_and_states_whole():
    lines = rendered(render.status_view(STATUS, width=80), 80)
    text = "\n".join(lines)
    assert all(len(line) <= 80 for line in lines), text
    assert "…" not in text, text
    for w in WORKERS:
        assert lines_with(lines, w["name"], w["address"], w["state"]), (w["name"], text)
    assert lines_with(lines, "alpha-node-01-123456", "compute,", "gpu", "1234 MB", "1h06m"), text
    assert lines_with(lines, "beta-2", "unreachable", "-/8"), text
    assert lines_with(lines, "nightly-crawl-of-the-shop", "running", "500/20000"), text
    assert lines_with(lines, "demo", "finished", "12/12"), text
    assert lines_with(lines, "nightly", "2026-12-02T03:00:00Z", "sched-a"), text


def test_status_at_200_columns_is_one_row_per_worker():
    lines = rendered(render.status_view(STATUS, width=200), 200)
    text = "\n".join(lines)
    assert "…" not in text and "Worker resources" not in text, text
    for w in WORKERS:
        if w["state"] == "unreachable":  # it did not answer: unknown numbers, not zeros or stale ones
            (row,) = lines_with(lines, w["name"], w["address"], w["state"], "compute, crawl", "-/8")
            assert "123456" not in row and "MB" not in row
            continue
        (row,) = lines_with(lines, w["name"], w["address"], w["state"], "compute, crawl", "1234 MB")
        assert "123456" in row and "3/8" in row


def test_status_shows_each_resource_used_of_total_at_80_and_200_columns():
    for width in (80, 200):
        lines = rendered(render.status_view(STATUS, width=width), width)
        text = "\n".join(lines)
        assert all(len(line) <= width for line in lines) and "…" not in text, text
        assert "cpu 3/8" in text and "licence 1/2" in text, text
        assert "4GiB/32GiB" in text, text


def test_progress_at_80_columns_is_two_whole_lines():
    lines = [line for line in rendered(render.job_progress(SNAP, width=80), 80) if line.strip()]
    text = "\n".join(lines)
    assert all(len(line) <= 80 for line in lines), text
    assert lines_with(lines, "nightly-crawl-of-the-shop", "12345/20000", "812/s", "ETA 1h00m"), text
    counters = ("ok 12000", "failed 300", "retried 17", "skipped 45", "queued 4500", "in flight 64")
    assert lines_with(lines, *counters), text
    assert len(lines) == 2 + 1 + 2, text  # bar line, counters line, the shares header and two workers


def test_progress_at_200_columns_is_one_line():
    lines = [line for line in rendered(render.job_progress(SNAP, width=200), 200) if line.strip()]
    assert lines_with(lines, "nightly-crawl-of-the-shop", "12345/20000", "ok 12000", "in flight 64", "ETA")
    assert len(lines) == 1 + 1 + 2


def test_summary_at_80_columns_keeps_the_output_path_and_failures():
    path = "/very/long/path/to/some/results/directory/demo.results.jsonl"
    summary = {"name": "demo", "total": 12, "ok": 10, "failed": 2, "skipped": 0, "retried": 1, "wall_s": 1.5,
               "tasks_per_s": 8.0, "output": path}  # fmt: skip
    failures = [("broken", "RuntimeError: boom " + "x" * 90), ("task-7", "TaskTimeout: over 60 s")]
    for width in (80, 200):
        lines = rendered(render.job_summary(summary, failures), width)
        text = "\n".join(lines)
        assert all(len(line) <= width for line in lines), text
        assert "…" not in text
        assert "".join(line.strip(" │") for line in text.splitlines()).count("demo.results.jsonl") == 1
        assert lines_with(lines, "broken", "RuntimeError: boom")
        assert lines_with(lines, "task-7", "TaskTimeout")
