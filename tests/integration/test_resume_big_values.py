"""``submit --resume`` hands a kept big value (written beside the results file) to its consumer
through a worker, in chunks: the coordinator never holds it whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli

HELPERS = Path(__file__).parents[1] / "helpers"
DATA_TASKS = str(HELPERS / "datatasks.py")
BYTE_TASKS = str(HELPERS / "bytetasks.py")
MIB = 200
"""The producer's array, in MiB."""

MEASURED = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)
"""Runs its arguments as the one child of a fresh process and prints that child's peak RSS."""


def measured_submit(*args: str, cwd: Path) -> tuple[int, int, str]:
    """``pyrocluster submit ARGS``: its exit code, its peak RSS in bytes, its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, sys.executable, "-m", "pyrocluster", "submit", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip
    out, _, peak = done.stdout.rpartition("PEAK_KB")
    assert peak, done
    return done.returncode, int(peak) * 1024, out + done.stderr


def records_of(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.timeout(150)
def test_resume_feeds_a_kept_big_value_through_a_worker_and_submit_stays_small(
    tmp_path, nameserver, worker_factory
):
    worker_factory(1, "--pool", "thread", "--tasks", DATA_TASKS)
    flag = tmp_path / "flag"
    job = tmp_path / "resumed.yaml"
    job.write_text(
        "name: resumed\ntasks:\n"
        f"  - {{id: make, call: big_array, args: [{MIB}]}}\n"
        f"  - {{id: gate, call: wait_for_file, args: [{json.dumps(str(flag))}, 0.2]}}\n"
        "  - {id: total, call: array_sum, args: [{$result: make}], needs: [gate]}\n"
    )
    code, first_peak, out = measured_submit(str(job), "--ns", nameserver, "--json", cwd=tmp_path)
    assert code == 1, out  # the gate timed out: total was skipped
    results = tmp_path / "resumed.results.jsonl"
    reference = records_of(results)["make"]["result"]
    assert reference["$file"] == "resumed.results.jsonl.values/make.npy"
    assert records_of(results)["total"]["status"] == "skipped"
    flag.touch()
    code, peak, out = measured_submit(str(job), "--ns", nameserver, "--json", "--resume", cwd=tmp_path)
    assert code == 0, out
    records = records_of(results)
    n = MIB * 131072
    assert records["total"]["status"] == "ok", records["total"]
    assert records["total"]["result"] == float(n * (n - 1) // 2)
    assert records["make"]["result"] == reference  # kept, not made again
    assert records["total"]["args"] == [reference]  # named by its file, as the first run names it
    size = MIB * 2**20
    # The first run streams the value to disk (flat memory): resuming may not cost much more.
    assert peak < first_peak + size // 2, (
        f"submit --resume peaked at {peak / 1e6:.0f} MB, the first run at {first_peak / 1e6:.0f} MB"
    )


def test_resume_feeds_a_kept_big_msgpack_value_through_a_worker(tmp_path, nameserver, worker_factory):
    """A value that is not an array (``.msgpack``) goes to the consumer the same way."""
    worker_factory(1, "--pool", "thread", "--tasks", DATA_TASKS, "--tasks", BYTE_TASKS)
    flag = tmp_path / "flag"
    job = tmp_path / "blob.yaml"
    job.write_text(
        "name: blob\ntasks:\n"
        "  - {id: make, call: big_bytes, args: [3]}\n"
        f"  - {{id: gate, call: wait_for_file, args: [{json.dumps(str(flag))}, 0.2]}}\n"
        "  - {id: size, call: length_of, args: [{$result: make}], needs: [gate]}\n"
    )
    first = run_cli("submit", str(job), "--ns", nameserver, "--json", cwd=tmp_path, timeout=90)
    assert first.returncode == 1, first
    results = tmp_path / "blob.results.jsonl"
    reference = records_of(results)["make"]["result"]
    assert reference["$file"] == "blob.results.jsonl.values/make.msgpack"
    flag.touch()
    again = run_cli("submit", str(job), "--ns", nameserver, "--json", "--resume", cwd=tmp_path, timeout=90)
    assert again.returncode == 0, again
    records = records_of(results)
    assert records["size"]["result"] == 3 * 2**20 and records["size"]["args"] == [reference]
    assert records["make"]["result"] == reference
