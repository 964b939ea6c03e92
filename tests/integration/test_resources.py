"""Resources (SPEC 10) on real processes: workers advertise them, calls ask, the worker admits
only what fits, GPUs are handed out one per call, memory is enforced."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrocluster import Cluster, protocol
from pyrocluster.errors import TaskFailed, WorkerUnavailable
from tests.conftest import TASKS_FILE, run_cli, running_cluster, wait_for
from tests.helpers.rawworker import RawWorker, decoded

pytestmark = pytest.mark.timeout(90)


def overlap(a: list, b: list) -> bool:
    """True when the [_, start, end] intervals overlap."""
    return a[1] < b[2] and b[1] < a[2]


def test_licence_calls_never_overlap_while_plain_calls_do(nameserver, worker_factory):
    worker_factory(
        1, "--services", "compute", "--concurrency", "2", "--resources", "licence=1", "--tasks", TASKS_FILE
    )
    with Cluster(nameserver) as cluster:
        licensed = list(cluster.options(resources={"licence": 1}).map("interval", [0.4] * 4))
        plain = list(cluster.map("interval", [0.6, 0.6]))
    for i, a in enumerate(licensed):
        for b in licensed[i + 1 :]:
            assert not overlap(a, b), licensed
    assert overlap(plain[0], plain[1]), plain


LICENCE_WORKERS = (
    ["--services", "compute", "--name", "lic", "--resources", "licence=2", "--tasks", TASKS_FILE],
    ["--services", "compute", "--name", "plain", "--tasks", TASKS_FILE],
)
"""Two workers, only one of them with licences."""


@pytest.fixture(scope="module")
def licence_ns() -> Iterator[str]:
    """LICENCE_WORKERS, shared by the module's tests that only submit to them."""
    with running_cluster(*LICENCE_WORKERS) as ns:
        yield ns


@pytest.fixture(scope="module")
def two_cpu_ns() -> Iterator[str]:
    """One two-slot worker without GPUs or licences, shared by the module's tests that only submit."""
    with running_cluster(["--services", "compute", "--concurrency", "2", "--tasks", TASKS_FILE]) as ns:
        yield ns


def test_calls_asking_a_licence_go_only_to_the_worker_that_has_it(licence_ns):
    with Cluster(licence_ns) as cluster:
        futures = [cluster.options(resources={"licence": 1}).submit("interval", 0.05) for _ in range(8)]
        assert {f.result(timeout=30) and f.worker for f in futures} == {"lic"}
        spread = [cluster.submit("interval", 0.3) for _ in range(6)]
        assert {f.result(timeout=30) and f.worker for f in spread} == {"lic", "plain"}


def test_a_job_asking_a_licence_runs_only_where_it_is(tmp_path, licence_ns):
    job = tmp_path / "lic.yaml"
    job.write_text(
        "name: lic\noutput: lic.jsonl\n"
        "tasks:\n  - id: t\n    call: interval\n    map: [0.05, 0.05, 0.05, 0.05, 0.05, 0.05]\n"
        "    resources: {licence: 1}\n"
    )
    done = run_cli("submit", str(job), "--ns", licence_ns, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (tmp_path / "lic.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["worker"] for r in records} == {"lic"}


def test_a_task_asking_a_gpu_no_worker_has_is_refused_before_anything_runs(tmp_path, two_cpu_ns):
    job = tmp_path / "gpu.yaml"
    job.write_text(
        "name: gpu\noutput: gpu.jsonl\n"
        "tasks:\n  - id: first\n    call: interval\n    args: [0]\n"
        "  - id: train\n    call: gpus_seen\n    resources:\n      gpu: 1\n"
    )
    done = run_cli("submit", str(job), "--ns", two_cpu_ns, "--wait", "2", cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "'train'" in done.stderr and "gpu" in done.stderr and "line 9" in done.stderr, done.stderr
    assert not (tmp_path / "gpu.jsonl").exists() or not (tmp_path / "gpu.jsonl").read_text().strip()


def test_the_api_says_why_after_wait(two_cpu_ns):
    with Cluster(two_cpu_ns, wait=1) as cluster:
        future = cluster.options(resources={"gpu": 1}).submit("gpus_seen")
        with pytest.raises(WorkerUnavailable, match="gpu"):
            future.result(timeout=30)


def test_each_gpu_call_gets_its_own_device_ids(nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--concurrency", "2", "--gpus", "3,5", "--tasks", TASKS_FILE)
    with Cluster(nameserver) as cluster:
        one = list(cluster.options(resources={"gpu": 1}).map("gpus_seen", [0.5, 0.5, 0.5, 0.5]))
        two = cluster.options(resources={"gpu": 2}).submit("gpus_seen").result(timeout=30)
        none = cluster.submit("gpus_seen").result(timeout=30)
    assert all(seen in ("3", "5") for seen, _, _ in one), one
    for i, a in enumerate(one):
        for b in one[i + 1 :]:
            if overlap(a, b):
                assert a[0] != b[0], one
    assert any(overlap(a, b) for i, a in enumerate(one) for b in one[i + 1 :]), "two ran at once"
    assert sorted(two[0].split(",")) == ["3", "5"]
    assert none[0] == ""  # a call that asked for no GPU sees none


def test_a_call_over_its_memory_fails_alone_and_the_worker_stays(nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--concurrency", "1", "--name", "mem", "--tasks", TASKS_FILE)
    raw = RawWorker(nameserver, "mem")
    ask = {"memory": "200MiB"}
    calls = [
        raw.call("allocate", 10) + [ask],
        raw.call("allocate", 400) + [ask],
        raw.call("allocate", 20) + [ask],
    ]
    reply = raw.run_batch(calls)
    kinds = [decoded(o)[0] for o in reply["outcomes"]]
    assert kinds == [protocol.OK, protocol.ERROR, protocol.OK], reply
    assert decoded(reply["outcomes"][1])[1]["type"] == "MemoryExceeded"
    with Cluster(nameserver) as cluster:
        assert (
            cluster.options(resources={"memory": "300MiB"}).submit("allocate", 100).result(timeout=30)
            == 100_000_000
        )
        with pytest.raises(TaskFailed, match="MemoryExceeded"):
            cluster.options(resources={"memory": "200MiB"}).submit("allocate", 400).result(timeout=30)
    assert raw.load()["running"] == 0
    # a stale or hostile coordinator: an ask over the totals, or malformed, fails that call alone
    odd = raw.run_batch(
        [
            raw.call("allocate", 1) + [{"licence": 1}],
            raw.call("allocate", 1) + [{"memory": "lots"}],
            raw.call("allocate", 1) + [["cpu", 1]],
            raw.call("allocate", 1),
        ]
    )
    errors = [decoded(o) for o in odd["outcomes"]]
    assert errors[0][1]["type"] == "ResourcesUnavailable" and "licence" in errors[0][1]["message"]
    assert errors[1][1]["type"] == "InvalidCall" and "memory" in errors[1][1]["message"]
    assert errors[2][1]["type"] == "InvalidCall" and "resources must be a dict" in errors[2][1]["message"]
    assert errors[3] == (protocol.OK, 1_000_000)


def test_status_shows_totals_and_used_while_a_call_holds_them(tmp_path, nameserver, worker_factory):
    worker_factory(
        1,
        "--services",
        "compute",
        "--concurrency",
        "2",
        "--resources",
        "licence=2,memory=1GiB",
        "--tasks",
        TASKS_FILE,
    )

    def resources() -> dict:
        done = run_cli("status", "--ns", nameserver, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["workers"][0]["resources"]

    idle = resources()
    assert idle["licence"] == {"total": 2, "used": 0} and idle["cpu"] == {"total": 2, "used": 0}
    assert idle["memory"]["total"] == 2**30
    release = tmp_path / "release"
    with Cluster(nameserver) as cluster:
        held = cluster.options(resources={"licence": 2, "memory": "256MiB"}).submit("hold", str(release))
        busy = wait_for(lambda: (r := resources())["licence"]["used"] == 2 and r, 20, what="licence used")
        assert busy["cpu"]["used"] == 1 and busy["memory"]["used"] == 256 * 2**20
        release.touch()
        held.result(timeout=30)
    wait_for(lambda: resources()["licence"]["used"] == 0, 20, what="licence given back")


def test_a_big_ask_starts_within_bounded_time_behind_a_stream_of_small_ones(two_cpu_ns):
    stop = threading.Event()

    def stream(cluster: Cluster) -> None:
        small = cluster.options(resources={"cpu": 1})
        while not stop.is_set():
            futures = [small.submit("interval", 0.15) for _ in range(4)]
            for f in futures:
                f.result(timeout=30)

    with Cluster(two_cpu_ns) as smalls, Cluster(two_cpu_ns) as big:
        feeders = [threading.Thread(target=stream, args=(smalls,), daemon=True) for _ in range(2)]
        for t in feeders:
            t.start()
        try:
            time.sleep(0.5)  # the stream is running: both cpus are always taken or wanted
            asked = time.time()
            _, start, _ = big.options(resources={"cpu": 2}).submit("interval", 0.1).result(timeout=30)
        finally:
            stop.set()
            for t in feeders:
                t.join(timeout=30)
    assert start - asked < 8.0, f"the big ask waited {start - asked:.1f} s"


def readme_job() -> str:
    """The job file of the README's "Resources" section, as written there."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    section = text.split("## Resources\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", section, flags=re.S)[0]


def test_the_readme_resources_job_runs_and_is_refused_without_the_licence(
    tmp_path, nameserver, worker_factory
):
    job = tmp_path / "resources.yaml"
    job.write_text(readme_job())
    plain = worker_factory(1, "--services", "compute", "--concurrency", "2")
    refused = run_cli("submit", str(job), "--ns", nameserver, "--wait", "2", cwd=tmp_path)
    assert refused.returncode == 2, refused
    message = (
        "tasks[1].resources (line 13): task 'solve' asks 1 licence, "
        "more than any live worker has (the largest: 0)"
    )
    assert message in refused.stderr and message in (Path(__file__).parents[2] / "README.md").read_text()
    for proc in plain:
        proc.stop()
    worker_factory(1, "--services", "compute", "--concurrency", "2", "--resources", "licence=1")
    done = run_cli("submit", str(job), "--ns", nameserver, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (tmp_path / "resources-demo.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in records) == ["ok"] * 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resources", "licence=x"], "--resources: licence: 'x' is not an amount"),
        (["--resources", "Licence=1"], "is not a resource name"),
        (["--resources", "memory=3XB"], "unknown unit 'XB'"),
        (["--gpus", "0,0"], "--gpus 0,0: a device id is given twice"),
        (["--resources", "gpu=2"], "give the device ids with --gpus"),
    ],
)
def test_bad_resource_options_are_exit_2_naming_them(args, message):
    done = run_cli("worker", "--ns", "127.0.0.1:1", "--wait", "0", *args, timeout=30)
    assert done.returncode == 2, done
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
