"""Big values from task to task in a job: worker to worker, written to disk by streaming, made
again when their holder dies."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pyrocluster import Cluster, codec, load_result
from pyrocluster.auth import make_proxy
from pyrocluster.config import Settings
from pyrocluster.valueref import ValueRef
from tests.conftest import run_cli

HELPERS = Path(__file__).parents[1] / "helpers"
DATA_TASKS = str(HELPERS / "datatasks.py")
PEAK_RSS_BYTES = 150 * 10**6
"""The submit process's memory may not grow with the values flowing between tasks."""

MEASURED = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)
"""Runs its arguments as the one child of a fresh process and prints that child's peak RSS."""


def records_of(path: Path) -> tuple[list[dict], dict[str, dict]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return lines, {r["id"]: r for r in lines}


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


@pytest.mark.timeout(240)
def test_a_200_mib_array_goes_worker_to_worker_and_submit_stays_small(tmp_path, nameserver, worker_factory):
    worker_factory(1, "--name", "maker", "--tags", "a", "--pool", "thread", "--tasks", DATA_TASKS)
    worker_factory(1, "--name", "user", "--tags", "b", "--pool", "thread", "--tasks", DATA_TASKS)
    job = tmp_path / "chain.yaml"
    job.write_text(
        "name: chain\ntasks:\n"
        "  - {id: make, call: big_array, args: [200], tags: [a]}\n"
        "  - {id: total, call: array_sum, args: [{$result: make}], tags: [b]}\n"
    )
    measured = subprocess.run(
        [sys.executable, "-c", MEASURED, sys.executable, "-m", "pyrocluster", "submit", str(job),
         "--ns", nameserver, "--json"],
        capture_output=True, text=True, timeout=200, cwd=tmp_path,
    )  # fmt: skip
    assert measured.returncode == 0, measured
    peak = int(measured.stdout.rsplit("PEAK_KB", 1)[1]) * 1024
    lines, records = records_of(tmp_path / "chain.results.jsonl")
    n = 200 * 131072
    assert records["total"]["status"] == "ok" and records["total"]["result"] == float(n * (n - 1) // 2)
    assert records["total"]["worker"] == "user" and records["make"]["worker"] == "maker"
    reference = records["make"]["result"]
    assert reference["$file"] == "chain.results.jsonl.values/make.npy" and reference["type"] == "ndarray"
    path = tmp_path / reference["$file"]
    assert reference["bytes"] == path.stat().st_size > 200 * 2**20
    assert reference["sha256"] == file_sha256(path)
    assert records["total"]["args"] == [reference]  # the record names the value, not its 200 MiB
    assert sorted(r["id"] for r in lines) == ["make", "total"]
    assert peak < PEAK_RSS_BYTES, f"submit's peak RSS was {peak / 1e6:.0f} MB"


@pytest.mark.timeout(120)
def test_resume_passes_a_kept_value_on_and_its_consumers_record_names_the_file(
    tmp_path, nameserver, worker_factory
):
    """The value read back from its file on --resume is written in the consumer's record as its
    file reference (as the first run writes it), not whole: 4 MiB of base64 in one line."""
    worker_factory(1, "--pool", "thread", "--tasks", DATA_TASKS)
    flag = tmp_path / "flag"
    job = tmp_path / "again.yaml"
    job.write_text(
        "name: again\ntasks:\n"
        "  - {id: make, call: big_array, args: [4]}\n"
        f"  - {{id: gate, call: wait_for_file, args: [{json.dumps(str(flag))}, 0.2]}}\n"
        "  - {id: total, call: array_sum, args: [{$result: make}], needs: [gate]}\n"
    )
    first = run_cli("submit", str(job), "--ns", nameserver, "--json", cwd=tmp_path, timeout=90)
    assert first.returncode == 1, first  # the gate timed out: total was skipped
    flag.touch()
    again = run_cli("submit", str(job), "--ns", nameserver, "--json", "--resume", cwd=tmp_path, timeout=90)
    assert again.returncode == 0, again
    lines, records = records_of(tmp_path / "again.results.jsonl")
    reference = records["make"]["result"]
    assert reference["$file"] == "again.results.jsonl.values/make.npy"
    n = 4 * 131072
    assert records["total"]["status"] == "ok" and records["total"]["result"] == float(n * (n - 1) // 2)
    assert records["total"]["args"] == [reference]
    assert max(len(line) for line in (tmp_path / "again.results.jsonl").read_text().splitlines()) < 4096


@pytest.mark.timeout(120)
def test_a_value_whose_holder_died_is_made_again_and_the_job_ends_ok(tmp_path, nameserver, worker_factory):
    workers = {
        name: worker_factory(1, "--name", name, "--pool", "thread", "--tasks", DATA_TASKS)[0]
        for name in ("w1", "w2")
    }
    runs, flag = tmp_path / "runs", tmp_path / "flag"
    job = tmp_path / "lost.yaml"
    job.write_text(
        "name: lost\ntasks:\n"
        f"  - {{id: make, call: counted_array, args: [4, {json.dumps(str(runs))}]}}\n"
        f"  - {{id: gate, call: wait_for_file, args: [{json.dumps(str(flag))}]}}\n"
        "  - {id: total, call: array_sum, args: [{$result: make}], needs: [gate]}\n"
    )
    out = tmp_path / "lost.results.jsonl"
    submit = subprocess.Popen(
        [sys.executable, "-m", "pyrocluster", "submit", str(job), "--ns", nameserver, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        made = None
        while made is None and time.monotonic() < deadline and submit.poll() is None:
            if out.exists():
                made = records_of(out)[1].get("make")
            time.sleep(0.05)
        assert made is not None and made["status"] == "ok", (made, submit.poll())
        os.kill(workers[made["worker"]].proc.pid, signal.SIGKILL)  # the only holder of the value
        flag.touch()
        stdout, stderr = submit.communicate(timeout=90)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.communicate(timeout=10)
    assert submit.returncode == 0, (stdout, stderr)
    lines, records = records_of(out)
    assert sorted(r["id"] for r in lines) == ["gate", "make", "total"]  # each id has one line
    assert runs.read_text().count("ran") == 2  # the producer ran again for its lost value
    n = 4 * 131072
    assert records["total"]["result"] == float(n * (n - 1) // 2)
    assert records["make"] == made  # its first ok record stands
    assert load_result(made, out).shape == (n,)
    assert json.loads(stdout.strip().splitlines()[-1])["ok"] == 3


def test_a_value_feeding_no_task_still_lands_in_the_results_file(tmp_path, nameserver, worker_factory):
    worker_factory(1, "--pool", "thread", "--tasks", DATA_TASKS)
    job = tmp_path / "alone.yaml"
    job.write_text("name: alone\ntasks:\n  - {id: make, call: big_array, args: [3]}\n")
    result = run_cli("submit", str(job), "--ns", nameserver, "--json", cwd=tmp_path)
    assert result.returncode == 0, result
    out = tmp_path / "alone.results.jsonl"
    record = records_of(out)[1]["make"]
    assert record["result"]["type"] == "ndarray"
    assert load_result(record, out).sum() == float(3 * 131072 * (3 * 131072 - 1) // 2)


@pytest.mark.timeout(120)
def test_a_future_passes_its_big_value_worker_to_worker_and_a_lost_one_is_made_again(
    tmp_path, nameserver, worker_factory
):
    procs = {
        name: worker_factory(1, "--name", name, "--tags", name, "--pool", "thread", "--tasks", DATA_TASKS)[0]
        for name in ("w1", "w2")
    }
    runs = str(tmp_path / "runs")
    n = 4 * 131072
    with Cluster(nameserver, wait=20) as cluster:
        made = cluster.options(tags=["w1"]).submit("counted_array", 4, runs)
        total = cluster.options(tags=["w2"]).submit("array_sum", made)
        assert total.result(timeout=60) == float(n * (n - 1) // 2)
        held = made.raw()
        assert isinstance(held, ValueRef) and held.holder == "w1"  # the coordinator never had it
        lost = cluster.submit("counted_array", 4, runs)
        assert lost.exception(timeout=60) is None  # done; its value is still on its worker
        holder = lost.raw().holder
        os.kill(procs[holder].proc.pid, signal.SIGKILL)
        survivor = "w2" if holder == "w1" else "w1"
        again = cluster.options(tags=[survivor]).submit("array_sum", lost)
        assert again.result(timeout=60) == float(n * (n - 1) // 2)  # its upstream ran again
        assert np.array_equal(lost.result(timeout=60), np.arange(n, dtype=np.float64))
    assert Path(runs).read_text().count("ran") == 4  # made, lost, made again for each of its two readers


def test_the_values_object_checks_its_arguments_and_a_freed_value_is_made_again(nameserver, worker_factory):
    worker_factory(1, "--pool", "thread", "--tasks", DATA_TASKS)
    with Cluster(nameserver, wait=20) as cluster:
        made = cluster.submit("big_array", 2)
        assert made.exception(timeout=60) is None
        ref = made.raw()
        assert isinstance(ref, ValueRef) and ref.size > 2 * 2**20
        with make_proxy(ref.uri, cluster.settings, timeout_s=10) as values:
            assert values.read("no-such-value", 0, 10) is None
            assert values.read(ref.id, 0, 1) == b"\xc9"  # an array's extension, as codec.pack made it
            for bad in ((ref.id, -1, 10), (ref.id, 0, 0), (ref.id, 0, 2**40), (7, 0, 10)):
                with pytest.raises(ValueError):
                    values.read(*bad)
            with pytest.raises(ValueError):
                values.free(["not", "a", "name"], None)
            assert values.free("another-coordinator", None) == 0
            assert values.free(cluster.sender_id, [ref.id]) == 1
            assert values.usage()["values"] == 0
        n = 2 * 131072
        assert np.array_equal(made.result(timeout=60), np.arange(n, dtype=np.float64))  # ran again


@pytest.mark.timeout(120)
def test_a_worker_fetches_only_from_a_registered_workers_values_object(nameserver, worker_factory):
    """A reference a submitter forges never makes a worker connect where it points."""
    worker_factory(1, "--pool", "thread", "--name", "vw1")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    settings = Settings().with_ns(nameserver)
    with make_proxy(f"PYRO:Pyro.NameServer@{nameserver}", settings, timeout_s=5) as ns:
        compute_uri = ns.lookup("pyrocluster.worker.vw1.compute")
    forged = [
        ValueRef("c" * 32, "vw1", f"PYRO:pyrocluster.worker.vw1.values.x@127.0.0.1:{port}", 10, "0" * 64),
        ValueRef(
            "d" * 32, "nobody", f"PYRO:pyrocluster.worker.nobody.values.x@127.0.0.1:{port}", 10, "0" * 64
        ),
        ValueRef("e" * 32, "vw1", f"PYRO:Pyro.NameServer@{nameserver}", 10, "0" * 64),
    ]
    calls = [[str(i), "echo", codec.pack_call([ref], {}), 5.0, 0] for i, ref in enumerate(forged)]
    fetch = {str(i): [[r.id, r.holder, r.uri, r.size, r.sha256, r.source]] for i, r in enumerate(forged)}
    with make_proxy(compute_uri, settings, timeout_s=30) as compute:
        reply = compute.run_batch({"from": "forger", "calls": calls, "fetch": fetch})
    errors = [codec.unpack(codec.as_bytes(outcome[1])) for outcome in reply["outcomes"]]
    assert [e["type"] for e in errors] == ["ValueGone"] * 3, errors
    assert "not registered at" in errors[0]["message"] and "not registered at" in errors[1]["message"]
    assert "is not the values object of worker vw1" in errors[2]["message"]
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing ever connected to the forged address
    listener.close()
