"""Dates, decimals, UUIDs, numpy and pandas values through real workers: same type, equal value."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pyrocluster import Cluster, TaskFailed, load_result
from tests.conftest import run_cli, running_cluster
from tests.helpers.datatasks import same, samples

DATA_TASKS = str(Path(__file__).parents[1] / "helpers" / "datatasks.py")
FLOW_TASKS = str(Path(__file__).parents[1] / "helpers" / "flowtasks.py")


DATA_WORKER = ["--services", "compute", "--concurrency", "2", "--tasks", DATA_TASKS, "--tasks", FLOW_TASKS]


@pytest.fixture(scope="module")
def data_ns() -> Iterator[str]:
    """One data worker shared by the module's tests (each calls and reads back, its own files)."""
    with running_cluster(DATA_WORKER) as ns:
        yield ns


def test_every_type_round_trips_through_submit_and_map(data_ns):
    values = samples()
    with Cluster(data_ns, wait=20) as cluster:
        for name, value in values.items():
            back = cluster.submit("echo", value).result(timeout=30)
            assert same(value, back), (name, value, back)
        echoed = list(cluster.map("echo", values.values()))
        assert [same(a, b) for a, b in zip(values.values(), echoed, strict=True)] == [True] * len(values)
        assert cluster.submit("check_samples", values).result(timeout=30) == []  # as the task receives them
        made = cluster.submit("make_samples").result(timeout=30)
        assert sorted(k for k in values if not same(values[k], made[k])) == []


def test_an_object_array_fails_its_own_call_naming_the_place(data_ns):
    with Cluster(data_ns, wait=20) as cluster:
        ok = cluster.submit("echo", np.arange(3))
        bad = cluster.submit("echo", {"frame": np.array([object()])})
        with pytest.raises(TaskFailed) as caught:
            bad.result(timeout=30)
        assert caught.value.type == "NotSendable"
        assert "args[0]['frame']: ndarray of dtype object" in caught.value.message
        assert same(ok.result(timeout=30), np.arange(3))
        results = cluster.map("echo", [np.arange(2), np.array([object()]), np.arange(4)])
        assert same(next(results), np.arange(2))
        with pytest.raises(TaskFailed, match="ndarray of dtype object"):
            next(results)


def test_a_job_file_passes_typed_values_downstream_and_records_them_as_json(tmp_path, data_ns):
    job = tmp_path / "typed.yaml"
    job.write_text(
        "name: typed\ntasks:\n"
        "  - {id: make, call: make_samples}\n"
        "  - {id: check, call: check_samples, args: [{$result: make}]}\n"
        "  - {id: day, call: echo, args: [2026-12-01]}\n"
    )
    result = run_cli("submit", str(job), "--ns", data_ns, "--json", cwd=tmp_path)
    assert result.returncode == 0, result
    records = {
        r["id"]: r for r in map(json.loads, (tmp_path / "typed.results.jsonl").read_text().splitlines())
    }
    assert records["check"]["result"] == []  # the consumer got every value with its type
    made = records["make"]["result"]
    assert made["aware"] == "2026-12-01T03:00:04.000005+01:00" and made["date"] == "2026-12-01"
    assert made["delta"] == -86394.999993 and made["money"] == "12.3400"
    assert made["id"] == "12345678-1234-5678-1234-567812345678"
    assert made["big_endian"] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]] and made["zero_d"] == 3.5
    assert made["frame"]["s"] == ["a", "b"] and made["series"] == [1, 2, 3]
    assert records["day"]["args"] == ["2026-12-01"] and records["day"]["result"] == "2026-12-01"


def test_a_big_result_lives_beside_the_results_file_and_resume_feeds_it_downstream(tmp_path, data_ns):
    job = tmp_path / "big.yaml"
    out = tmp_path / "big.results.jsonl"
    job.write_text(
        "name: big\ntasks:\n"
        "  - {id: make, call: big_array, args: [5]}\n"
        "  - {id: total, call: array_sum, args: [{$result: make}]}\n"
        "  - {id: gate, call: needs_file, args: [" + json.dumps(str(tmp_path / "flag")) + "]}\n"
        "  - {id: again, call: array_sum, args: [{$result: make}], needs: [gate]}\n"
    )
    first = run_cli("submit", str(job), "--ns", data_ns, "--json", cwd=tmp_path)
    assert first.returncode == 1, first  # gate fails until the flag exists
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    reference = records["make"]["result"]
    assert reference["$file"] == "big.results.jsonl.values/make.npy" and reference["type"] == "ndarray"
    path = tmp_path / reference["$file"]
    assert reference["bytes"] == path.stat().st_size > 5 * 2**20
    assert reference["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    expected = np.arange(5 * 131072, dtype=np.float64)
    assert same(load_result(records["make"], out), expected)
    assert records["total"]["result"] == float(expected.sum())  # fed worker to worker on the first run
    assert records["total"]["args"] == [reference]  # the record names the value it received
    total = records["total"]
    (tmp_path / "flag").touch()
    again = run_cli("submit", str(job), "--ns", data_ns, "--resume", "--json", cwd=tmp_path)
    assert again.returncode == 0, again
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["make"]["result"] == reference  # kept, not run again
    assert records["total"] == total  # an ok consumer of a big value is not run again either
    assert records["again"]["result"] == float(expected.sum())  # fed from the file on --resume
