"""The dashboard's charts and workflow graph as pure code."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pyrocluster.jobs.graphview import graph_view
from pyrocluster.jobs.spec import load_job
from pyrocluster.jobs.workflow import Workflow
from pyrocluster.web.charts import Throughput, quantile, task_quantiles


def test_throughput_buckets_rates_and_ignores_counters_that_went_down() -> None:
    chart = Throughput(window_s=60, bucket_s=10)
    chart.add(1000.0, 0, 0)
    chart.add(1005.0, 100, 10)  # 110 finished, 10 failed in the bucket of 1000-1010
    chart.add(1012.0, 40, 10)  # a worker restarted: its counters went down, no progress
    chart.add(1015.0, 240, 10)
    series = chart.series(1019.0)
    assert series["bucket_s"] == 10 and len(series["rate"]) == 6
    assert series["rate"][-2:] == [11.0, 20.0] and series["failures"][-2:] == [1.0, 0.0]
    later = chart.series(1200.0)
    chart.add(1200.0, 240, 10)
    assert sum(chart.series(1200.0)["rate"]) == 0 and sum(later["rate"]) == 0  # all older than 15 min


def test_quantiles_interpolate_within_a_bucket() -> None:
    bounds = [0.01, 0.1, 1.0]
    assert quantile(bounds, [0, 0, 0, 0], 0.5) is None
    assert quantile(bounds, [0, 10, 0, 0], 0.5) == pytest.approx(0.055)
    assert quantile(bounds, [50, 45, 5, 0], 0.95) == pytest.approx(0.1)
    assert quantile(bounds, [0, 0, 0, 4], 0.5) == 1.0  # +Inf: its lower bound
    rows = task_quantiles(
        [
            {"buckets": bounds, "tasks": {"add": {"histogram": [10, 0, 0, 0]}}},
            {
                "buckets": bounds,
                "tasks": {"add": {"histogram": [10, 0, 0, 0]}, "slow": {"histogram": [0, 0, 2, 0]}},
            },
        ]
    )
    assert rows == [
        {"task": "add", "runs": 20, "p50_ms": 5.0, "p95_ms": 9.5},
        {"task": "slow", "runs": 2, "p50_ms": 550.0, "p95_ms": 955.0},
    ]


def test_a_20000_item_map_is_one_node_with_its_counts(tmp_path: Path) -> None:
    items = ", ".join(f"[{i}, {i}]" for i in range(20_000))
    job = tmp_path / "big.yaml"
    job.write_text(
        "name: big\ntasks:\n"
        f"  - {{id: m, call: add, map: [{items}]}}\n"
        "  - {id: n, call: add, args: [{$result: m-0}, 1]}\n"
        "  - {id: other, call: add, args: [1, 2]}\n"
        "  - {id: total, call: add, args: [{$result: n}, {$result: m}]}\n"
    )
    flow = Workflow(load_job(job), {}, lambda records: None)
    before = {n["id"]: n["state"] for n in flow.view()["nodes"]}
    assert before == {"m": "running", "n": "waiting", "other": "running", "total": "waiting"}
    flow._tally([{"id": f"m-{i}", "status": "ok" if i else "failed"} for i in range(15_000)])
    view = flow.view()
    m = view["nodes"][0]
    assert (m["id"], m["map"], m["total"], m["ok"], m["failed"], m["state"]) == (
        "m",
        True,
        20_000,
        14_999,
        1,
        "running",
    )
    assert view["edges"] == [["m", "n"], ["m", "total"], ["n", "total"]]
    assert {n["id"]: n["layer"] for n in view["nodes"]} == {"m": 0, "n": 1, "other": 0, "total": 2}
    graph = flow.flow.graph
    done = graph_view(graph, {"m": Counter(ok=20_000), "other": Counter(failed=1)})
    assert {n["id"]: n["state"] for n in done["nodes"]}["m"] == "done"
    assert {n["id"]: n["state"] for n in done["nodes"]}["other"] == "failed"
