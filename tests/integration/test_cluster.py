"""The coordinator against real worker processes: balancing, failover, liveness, elasticity."""

from __future__ import annotations

import signal
import threading
import time
from collections import defaultdict

import pytest

from pyrocluster import Cluster, TaskFailed, WorkerUnavailable
from pyrocluster.coordinator import readhere
from pyrocluster.tasks import count_primes
from tests.conftest import TASKS_FILE, wait_for


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def test_map_spreads_over_both_workers_in_order_within_slots(nameserver, worker_factory):
    worker_factory(2, "--concurrency", "2", "--tasks", TASKS_FILE, "--services", "compute")
    with Cluster(nameserver) as cluster:
        results = list(cluster.starmap("add", [(i, i) for i in range(2000)]))
        assert results == [2 * i for i in range(2000)]
        futures = [cluster.submit("interval", 0.01) for _ in range(200)]
        per_worker: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for fut in futures:
            _pid, start, end = fut.result(timeout=60)
            per_worker[fut.worker].append((start, end))
        status = cluster.status()
    assert len(per_worker) == 2, f"both workers should run tasks: {dict(per_worker)}"
    for worker, intervals in per_worker.items():
        assert max_overlap(intervals) <= 2, f"{worker} ran more than its 2 slots at once"
    done = {w["name"]: w["done"] for w in status["workers"]}
    assert all(d > 0 for d in done.values()), done
    assert sum(done.values()) >= 2200


def test_a_map_yields_every_value_before_its_first_failure_then_raises_it(nameserver, worker_factory):
    worker_factory(2, "--concurrency", "2", "--services", "compute")
    items: list[tuple[object, object]] = [(i, i) for i in range(3000)]
    items[2500] = (1, "x")  # a TypeError in a full chunk of 1,024 (the chunks double from 1)
    got = []
    with Cluster(nameserver) as cluster:
        with pytest.raises(TaskFailed) as failed:
            for value in cluster.starmap("add", items):
                got.append(value)
        assert failed.value.type == "TypeError"
        assert list(cluster.starmap("add", [(1, 2)] * 5)) == [3] * 5  # the cluster maps on
    assert got == [2 * i for i in range(2500)]


@pytest.mark.parametrize("how", ["closed", "raised in the loop"])
def test_a_map_left_early_runs_none_of_its_calls_no_worker_has_taken(nameserver, worker_factory, how):
    """As ``Executor.map``: the rest of an abandoned map never runs, so the next call does not
    wait behind 40 half-second sleeps on the one slot (those already on the worker finish)."""
    worker_factory(1, "--concurrency", "1", "--services", "compute")
    with Cluster(nameserver) as cluster:
        if how == "closed":
            results = cluster.map("sleep", [0.5] * 40)
            assert next(results) == 0.5
            results.close()
        else:
            with pytest.raises(KeyError):
                for _ in cluster.map("sleep", [0.5] * 40):
                    raise KeyError("stop here")
        assert cluster.waiting_by_service().get("compute", 0) == 0
        assert cluster.submit("add", 1, 2).result(timeout=5) == 3


def test_sigkill_mid_map_loses_nothing(nameserver, worker_factory):
    victim, _other = worker_factory(2, "--concurrency", "2", "--services", "compute")
    with Cluster(nameserver, probe_timeout=2) as cluster:
        futures = [cluster.submit("sleep", 0.05) for _ in range(120)]
        wait_for(lambda: sum(f.done() for f in futures) >= 10, 30)
        victim.signal(signal.SIGKILL)
        results = [f.result(timeout=90) for f in futures]
    assert results == [0.05] * 120
    assert all(f.attempts >= 1 for f in futures)


@pytest.mark.slow
def test_sigstop_fails_over_by_liveness_not_task_timeout(nameserver, worker_factory):
    (paused,) = worker_factory(1, "--concurrency", "1", "--services", "compute", "--name", "paused")
    worker_factory(1, "--concurrency", "1", "--services", "compute", "--name", "steady")
    with Cluster(nameserver, timeout=60, probe_timeout=2) as cluster:
        futures = [cluster.submit("sleep", 0.2) for _ in range(20)]
        wait_for(lambda: any(f.done() and f.worker == "paused" for f in futures), 30)
        paused.signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        for f in futures:
            f.result(timeout=30)
        took = time.monotonic() - stopped_at
        assert took < 20, f"calls of the stopped worker took {took:.1f} s to finish elsewhere"
        paused.signal(signal.SIGCONT)

        def used_again() -> bool:
            batch = [cluster.submit("sleep", 0.05) for _ in range(6)]
            return any(f.result(timeout=30) is not None and f.worker == "paused" for f in batch)

        wait_for(used_again, 30)


def test_worker_started_mid_job_gets_work(nameserver, worker_factory):
    worker_factory(1, "--concurrency", "1", "--services", "compute", "--name", "first")
    with Cluster(nameserver) as cluster:
        futures = [cluster.submit("sleep", 0.1) for _ in range(80)]
        worker_factory(1, "--concurrency", "1", "--services", "compute", "--name", "late")
        workers = {f.result(timeout=60) and f.worker for f in futures}
    assert "late" in workers, workers


def test_errors_are_clear_and_the_worker_keeps_serving(nameserver, worker_factory):
    worker_factory(1, "--concurrency", "1", "--tasks", TASKS_FILE, "--services", "compute")
    with Cluster(nameserver, wait=1) as cluster:
        with pytest.raises(TaskFailed) as failed:
            cluster.submit("fail", "boom").result(timeout=30)
        assert failed.value.type == "RuntimeError"
        assert failed.value.message == "boom"
        assert "RuntimeError: boom" in failed.value.traceback
        # Routing by catalog: no worker offers it, so it waits ``wait`` for one that does.
        with pytest.raises(WorkerUnavailable, match="no live worker offers compute task 'no_such_task'"):
            cluster.submit("no_such_task").result(timeout=30)
        with pytest.raises(TaskFailed, match="type object cannot be sent"):
            cluster.submit("unsendable").result(timeout=30)
        assert cluster.submit("add", 40, 2).result(timeout=30) == 42


def test_no_worker_within_wait_raises_worker_unavailable(nameserver):
    with (
        Cluster(nameserver, wait=1) as cluster,
        pytest.raises(WorkerUnavailable, match="no live worker offers compute"),
    ):
        cluster.submit("add", 1, 2).result(timeout=30)


def test_tags_route_calls_to_workers_that_carry_them(nameserver, worker_factory):
    worker_factory(1, "--services", "compute", "--name", "plain", "--concurrency", "1")
    worker_factory(1, "--services", "compute", "--name", "gpu", "--tags", "gpu,fast", "--concurrency", "1")
    with Cluster(nameserver) as cluster:
        futures = [cluster.options(tags=["gpu"]).submit("add", i, 1) for i in range(50)]
        assert {f.result(timeout=30) and f.worker for f in futures} == {"gpu"}


def test_cpu_bound_work_spreads_over_both_workers(nameserver, worker_factory):
    """Both one-slot workers run the CPU-bound tasks (the speed-up itself is bench W2's to measure)."""
    ranges = [(10**9 + k * 5_000_000, 10**9 + (k + 1) * 5_000_000) for k in range(12)]
    worker_factory(2, "--concurrency", "1", "--services", "compute")
    with Cluster(nameserver) as cluster:
        wait_for(lambda: cluster.capacity("compute") == 2, 10, what="both workers known")
        futures = [cluster.submit("count_primes", lo, hi) for lo, hi in ranges]
        counts = [f.result(timeout=60) for f in futures]
        shares = {w: sum(f.worker == w for f in futures) for w in {f.worker for f in futures}}
    assert counts == [count_primes(lo, hi) for lo, hi in ranges]
    assert len(shares) == 2 and min(shares.values()) >= 3, shares


def test_a_lone_call_whose_worker_is_killed_while_its_caller_reads_the_reply_runs_again(
    nameserver, worker_factory, tmp_path, monkeypatch
):
    monkeypatch.setattr(readhere, "INLINE_WAIT_S", 60.0)  # the caller reads every reply itself
    args = ("--concurrency", "1", "--tasks", TASKS_FILE, "--services", "compute")
    procs = {name: worker_factory(1, "--name", name, *args)[0] for name in ("wa", "wb")}
    release = tmp_path / "release"
    with Cluster(nameserver, probe_timeout=2) as cluster:
        warm = [cluster.submit("sleep", 0.3) for _ in range(2)]  # a connection open to each worker
        assert {f.result(timeout=30) and f.worker for f in warm} == {"wa", "wb"}
        future = cluster.submit("hold", str(release))
        settled_on: list[str] = []
        # a follower runs where the outcome is set (done-callbacks run on their own thread)
        future.follow(lambda _f: settled_on.append(threading.current_thread().name))
        got: list[object] = []
        reader = threading.Thread(target=lambda: got.append(future.result(timeout=60)), name="reader")
        reader.start()
        busy = wait_for(lambda: [w for w in cluster.status()["workers"] if w["busy"]], 20, what="busy")
        procs[busy[0]["name"]].signal(signal.SIGKILL)
        wait_for(lambda: future.attempts == 2, 30, what="a second attempt")
        release.touch()
        reader.join(timeout=30)
    assert got == [str(release)]
    assert future.worker != busy[0]["name"]
    assert settled_on == ["reader"]  # failure, retry and reply all went through the waiting thread


def test_status_keeps_its_connections_between_calls_and_shows_a_killed_worker_unreachable(
    nameserver, worker_factory
):
    args = ("--services", "compute", "--pool", "thread")
    procs = {name: worker_factory(1, "--name", name, *args)[0] for name in ("sa", "sb")}
    with Cluster(nameserver) as cluster:

        def states() -> dict[str, str]:
            return {w["name"]: w["state"] for w in cluster.status()["workers"]}

        def sockets() -> set[int]:
            return {id(ch.sock()) for ch in cluster._status_channels._by_uri.values()}

        assert states() == {"sa": "ready", "sb": "ready"}
        kept = sockets()
        assert states() == {"sa": "ready", "sb": "ready"}
        assert sockets() == kept and len(kept) == 2  # no new connection, no new handshake
        procs["sb"].signal(signal.SIGKILL)
        wait_for(lambda: states() == {"sa": "ready", "sb": "unreachable"}, 20, what="sb unreachable")
