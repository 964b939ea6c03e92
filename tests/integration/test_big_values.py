"""Values of hundreds of MiB through real workers, and the caps on a single value."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pyrocluster import Cluster, TaskFailed

HELPERS = Path(__file__).parents[1] / "helpers"
DATA_TASKS = str(HELPERS / "datatasks.py")
EIGHT_MIB = 8 * 1024 * 1024


STATUS_BOUND_S = 2.0
"""How long ``status`` may take while a big value moves: it answers in milliseconds when idle and
within 0.3 s at load 20 (bench/big_values.py measures it against the 1 s goal); the bound is the
worker's own status timeout, generous for a test run beside others on 2 loaded cores. Before
big values travelled beside their messages, the worker held the interpreter lock for seconds
and showed ``unreachable``."""
STATUS_GOAL_S = 1.0
"""SPEC 9's goal for ``status`` while a big value moves: held by nine answers in ten here (every
one in the benchmark on a quiet machine)."""


def echo_watched(nameserver: str, mib: int) -> tuple[dict, list[float]]:
    """Echo ``mib`` MiB from another process while this one asks ``status`` again and again: the
    echo's report and how long each answer took."""
    with Cluster(nameserver, wait=20) as watcher:
        watcher.status()  # connections made before the big value moves
        echo = subprocess.Popen(
            [sys.executable, str(HELPERS / "bigecho.py"), nameserver, str(mib)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            answers = []
            while echo.poll() is None:
                started = time.monotonic()
                status = watcher.status()
                answers.append(time.monotonic() - started)
                assert status["nameserver"]["reachable"] and len(status["workers"]) == 1, status
                assert status["workers"][0].get("state") != "unreachable", status
                time.sleep(0.05)
            out, err = echo.communicate(timeout=10)
        finally:
            if echo.poll() is None:
                echo.kill()
            echo.communicate(timeout=10)  # closes its pipes whatever happened
    assert echo.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), answers


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_300_mib_array_comes_back_equal_while_status_keeps_answering(nameserver, worker_factory, pool):
    worker_factory(1, "--services", "compute", "--concurrency", "2", "--pool", pool)
    report, answers = echo_watched(nameserver, 300)
    assert report["equal"] is True, report
    assert answers, report  # status was asked while the value moved
    assert max(answers) < STATUS_BOUND_S, (max(answers), report)
    nine_in_ten = sorted(answers)[(9 * (len(answers) - 1)) // 10]
    assert nine_in_ten < STATUS_GOAL_S, (nine_in_ten, answers, report)


def outcomes(futures: list) -> list:
    """Each future's result, or the exception it ended with."""
    ended = []
    for future in futures:
        try:
            ended.append(future.result(timeout=60))
        except TaskFailed as exc:
            ended.append(exc)
    return ended


def test_an_argument_over_max_value_bytes_fails_alone_naming_both_sizes(nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--concurrency", "2", "--pool", "thread")
    big = np.zeros(EIGHT_MIB // 8 + 1024)  # 8 MiB + 8 KiB of float64
    with Cluster(nameserver, wait=20, max_value_bytes=EIGHT_MIB) as cluster:
        first, refused, last = outcomes([cluster.submit("echo", x) for x in (1, big, 2)])
        assert np.array_equal(cluster.submit("echo", big[:1000]).result(timeout=30), big[:1000])
        mapped = cluster.map("echo", [1, 2, big, 3])  # a map encodes its chunks itself
        assert (next(mapped), next(mapped)) == (1, 2)
        with pytest.raises(TaskFailed, match="ArgumentsTooLarge: arguments of 839"):
            next(mapped)
    assert (first, last) == (1, 2)
    assert isinstance(refused, TaskFailed) and refused.type == "ArgumentsTooLarge"
    assert refused.message.startswith("arguments of 839") and "bytes are over" in refused.message
    assert "over max_value_bytes (8388608 bytes)" in refused.message


def test_big_arguments_among_a_maps_calls_travel_beside_their_batch_and_come_back(nameserver, worker_factory):
    """A map's batches of one task and one timeout go as columns; the arguments of 1 MiB or more
    among them go after the request as attachments, and each result comes back to its own call."""
    worker_factory(1, "--services", "compute", "--concurrency", "2", "--pool", "thread")
    values = [np.full(300_000, i, dtype=np.float64) if i % 3 == 0 else i for i in range(24)]
    with Cluster(nameserver, wait=20) as cluster:
        got = list(cluster.map("echo", values))
    assert len(got) == len(values)
    for i, (back, sent) in enumerate(zip(got, values, strict=True)):
        assert np.array_equal(back, sent) if i % 3 == 0 else back == sent, i


def test_a_worker_refuses_values_over_its_own_cap_and_the_others_are_unaffected(nameserver, worker_factory):
    worker_factory(
        1, "--services", "compute", "--pool", "thread", "--tasks", DATA_TASKS, "--max-value-bytes", "8MiB"
    )
    with Cluster(nameserver, wait=20) as cluster:  # its own cap is the default 1 GiB
        made = outcomes([cluster.submit("big_array", n) for n in (1, 9, 2)])
        sent = outcomes([cluster.submit("echo", x) for x in (3, np.zeros(9 * 131072), 4)])
    assert np.array_equal(made[0], np.arange(131072.0)) and np.array_equal(made[2], np.arange(262144.0))
    assert isinstance(made[1], TaskFailed) and made[1].type == "ResultTooLarge"
    assert made[1].message.startswith("result of 94") and "bytes is over" in made[1].message
    assert "over max_value_bytes (8388608 bytes) of this worker" in made[1].message
    assert (sent[0], sent[2]) == (3, 4)
    assert isinstance(sent[1], TaskFailed) and sent[1].type == "ArgumentsTooLarge"
    assert sent[1].message.startswith("arguments of 94")
    assert "over max_value_bytes (8388608 bytes) of this worker" in sent[1].message


def resident_bytes(pid: int) -> int:
    """A live process's resident memory (/proc/PID/status): it grows as a big value arrives."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.mark.timeout(120)
def test_a_worker_killed_while_a_big_argument_streams_to_it_fails_over(nameserver, worker_factory):
    workers = worker_factory(2, "--services", "compute", "--pool", "thread")
    value = np.random.default_rng(3).random(128 * 131072)  # 128 MiB
    with Cluster(nameserver, wait=20) as cluster:
        cluster.status()
        before = {w.pid: resident_bytes(w.pid) for w in workers}
        future = cluster.submit("echo", value)
        killed = None
        deadline = time.monotonic() + 60
        while killed is None and time.monotonic() < deadline and not future.done():
            for w in workers:
                if resident_bytes(w.pid) - before[w.pid] > 32 * 1024 * 1024:  # the value is arriving
                    w.kill()
                    killed = w
                    break
            time.sleep(0.002)
        back = future.result(timeout=90)
    assert killed is not None and killed.proc.wait(timeout=10) != 0
    assert np.array_equal(back, value)
