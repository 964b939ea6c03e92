"""A worker owns its slots across coordinators: admission, start order, cancel, and a drain that
ends, on real worker processes driven through the raw protocol (docs/protocol.md)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrocluster import protocol
from pyrocluster.local import ManagedProcess, start_nameserver, start_worker
from tests.conftest import TASKS_FILE, Processes, wait_for
from tests.helpers.rawworker import RawWorker, decoded
from tests.integration.test_cluster import max_overlap

WORKERS = {
    "two": ["--pool", "process", "--concurrency", "2"],
    "three": ["--pool", "thread", "--concurrency", "3"],
    "proc1": ["--pool", "process", "--concurrency", "1"],
    "thread1": ["--pool", "thread", "--concurrency", "1"],
}
"""The module's workers: name -> pool options."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """One name server and the workers of WORKERS, shared by the module; the name server's address."""
    procs = Processes()
    try:
        ns_proc, ns = start_nameserver()
        procs.add(ns_proc)
        started = [
            procs.add(
                start_worker(
                    ns, ["--name", name, "--services", "compute", "--tasks", TASKS_FILE, *args], wait=False
                )
            )
            for name, args in WORKERS.items()
        ]
        for proc in started:
            proc.wait_ready()
        yield ns
    finally:
        procs.stop_all()


def client(ns: str, name: str, sender: str = "coord-a") -> RawWorker:
    """A raw client of an idle worker, from ``sender``."""
    w = RawWorker(ns, name, sender=sender)
    idle = {"slots": w.entry.slots["compute"], "running": 0, "queued": 0}
    wait_for(lambda: {k: v for k, v in w.load().items() if k != "direct"} == idle, 10)
    return w


class Background:
    """``run_batch`` calls on threads of their own; their replies (or exceptions) kept."""

    def __init__(self) -> None:
        self.replies: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []

    def send(self, key: str, w: RawWorker, calls: list[list[Any]], sender: str | None = None) -> None:
        def body() -> None:
            try:
                self.replies[key] = w.run_batch(calls, sender=sender)
            except Exception as exc:
                self.replies[key] = exc

        thread = threading.Thread(target=body, name=f"send-{key}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "a batch never got its reply"


def test_two_coordinators_never_get_more_than_the_slots(cluster):
    a, b = client(cluster, "two", "coord-a"), client(cluster, "two", "coord-b")
    intervals: list[tuple[float, float]] = []
    samples: list[dict[str, Any]] = []
    busy_answers = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            load, info = a.load(), a.info()
            samples.append({**load, "busy": info["busy"]})
            time.sleep(0.03)

    def send(w: RawWorker, batches: int) -> None:
        for _ in range(batches):
            while True:
                reply = w.run_batch([w.call("interval", 0.1) for _ in range(2)])
                if "busy" not in reply:
                    break
                busy_answers.append(reply["load"])
                time.sleep(0.02)
            for outcome in reply["outcomes"]:
                _pid, start, end = decoded(outcome)[1]
                intervals.append((start, end))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    senders = [threading.Thread(target=send, args=(w, 2), daemon=True) for w in (a, b, a, b, a, b)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(60)
    stop.set()
    sampler.join(10)
    assert len(intervals) == 6 * 2 * 2
    assert max_overlap(intervals) <= 2, "the worker ran more calls at once than its 2 slots"
    # Six senders, one batch out each: 2 running and 4 queued, or, for a moment after a batch
    # ends and before the next queued one starts, 1 running and 5 queued (its sender's next
    # batch came first). Never more than the slots running.
    over = [
        s for s in samples if not (s["running"] <= 2 and s["busy"] <= 2 and s["running"] + s["queued"] <= 6)
    ]
    assert samples and not over, over
    # each sender holds at most 3 batches, under its HELD_PER_SLOT * 2 = 4: never turned away
    assert not busy_answers, busy_answers


def fill_slots(bg: Background, w: RawWorker, gates: Path) -> None:
    """Occupy every slot of ``w`` with a task that ends when :func:`release` says (slot 0 first)."""
    n = w.entry.slots["compute"]
    for i in range(n):
        bg.send(
            f"blocker{i}", w, [w.call("hold", str(gates.with_name(f"{gates.name}-{min(i, 1)}")))], "blocker"
        )
    wait_for(lambda: w.load()["running"] == n, 10, what="every slot busy")


def release(gates: Path, first_only: bool = False) -> None:
    """End the first blocker (waiting batches then start one by one in its slot), or all of them."""
    gates.with_name(f"{gates.name}-0").touch()
    if not first_only:
        gates.with_name(f"{gates.name}-1").touch()


def logged_order(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_waiting_batches_start_by_priority_then_fewest_calls_and_only_a_full_sender_is_busy(
    cluster, tmp_path
):
    a, b = client(cluster, "three", "coord-a"), client(cluster, "three", "coord-b")
    log = tmp_path / "order.log"
    bg = Background()
    fill_slots(bg, a, tmp_path / "round1")
    batches = [("a1", a, None), ("a2", a, None), ("b1", b, None)]
    batches += [(f"x{i}", a, "blocker") for i in range(3)]  # the blockers' sender: 6 batches held
    for key, w, sender in batches:
        queued = a.load()["queued"]
        bg.send(key, w, [w.call("logged", key, str(log))], sender)
        wait_for(lambda q=queued: a.load()["queued"] == q + 1, 10)
    assert protocol.HELD_PER_SLOT * 3 == 6
    full = a.run_batch([a.call("logged", "never", str(log))], sender="blocker")
    assert full.get("busy") is True and full["load"] == {"slots": 3, "running": 3, "queued": 6}, full
    release(tmp_path / "round1", first_only=True)
    wait_for(lambda: len(logged_order(log)) == 6, 10, what="the queue drained through one slot")
    release(tmp_path / "round1")
    bg.join()
    # fewest calls started first (the blockers' sender had 3), ties by arrival
    assert logged_order(log) == ["a1", "b1", "a2", "x0", "x1", "x2"]

    log.unlink()
    bg = Background()
    fill_slots(bg, a, tmp_path / "round2")
    for key, w, priority in (("low1", a, 0), ("low2", b, 0), ("high", a, 10)):
        queued = a.load()["queued"]
        bg.send(key, w, [w.call("logged", key, str(log), priority=priority)])
        wait_for(lambda q=queued: a.load()["queued"] == q + 1, 10)
    release(tmp_path / "round2", first_only=True)
    wait_for(lambda: len(logged_order(log)) == 3, 10, what="the queue drained through one slot")
    release(tmp_path / "round2")
    bg.join()
    assert logged_order(log) == ["high", "low2", "low1"], (
        "priority first; then coord-b, as coord-a was just served"
    )


def test_cancel_drops_a_queued_batch_and_never_reaches_another_coordinators_calls(cluster, tmp_path):
    w = client(cluster, "proc1")
    marker = tmp_path / "ran"
    bg = Background()
    fill_slots(bg, w, tmp_path / "gate")
    queued_calls = [w.call("write_after", str(marker), 0), w.call("add", 1, 2)]
    bg.send("queued", w, queued_calls)
    wait_for(lambda: w.load()["queued"] == 1, 10)
    ids = [c[0] for c in queued_calls]
    assert w.cancel(ids, sender="someone-else") == 0
    assert w.load()["queued"] == 1
    cancelled_at = time.monotonic()
    assert w.cancel(ids) == 2
    wait_for(lambda: "queued" in bg.replies, 2, 0.02, what="the cancelled batch's reply")
    assert time.monotonic() - cancelled_at < 1.0
    assert [o[0] for o in bg.replies["queued"]["outcomes"]] == [protocol.CANCELLED, protocol.CANCELLED]
    # a batch with only some calls cancelled stays queued; those are skipped when it runs
    partly = [w.call("write_after", str(marker), 0), w.call("add", 3, 4)]
    bg.send("partly", w, partly)
    wait_for(lambda: w.load()["queued"] == 1, 10)
    assert w.cancel([partly[0][0]]) == 1
    release(tmp_path / "gate")
    bg.join()
    assert [decoded(o) for o in bg.replies["partly"]["outcomes"]] == [
        (protocol.CANCELLED, None),
        (protocol.OK, 7),
    ]
    assert {k: v for k, v in w.load().items() if k != "direct"} == {"slots": 1, "running": 0, "queued": 0}
    assert not marker.exists(), "a cancelled queued call ran"


def test_cancel_of_a_running_process_slot_call_kills_it_and_frees_the_slot(cluster, tmp_path):
    w = client(cluster, "proc1")
    pid_before = decoded(w.run_batch([w.call("whoami")])["outcomes"][0])[1]
    started = tmp_path / "started"
    calls = [
        w.call("add", 1, 1),
        w.call("hold", str(tmp_path / "never"), 30, str(started)),
        w.call("add", 2, 2),
    ]
    bg = Background()
    bg.send("running", w, calls)
    wait_for(started.exists, 10, 0.02, what="the long call running")
    cancelled_at = time.monotonic()
    assert w.cancel([calls[1][0]]) == 1
    wait_for(lambda: w.load()["running"] == 0, 2, 0.02, what="the slot free again within 2 s")
    bg.join(5)
    reply = bg.replies["running"]
    assert time.monotonic() - cancelled_at < 2.0
    # the finished call keeps its result; the one not started goes back unrun, at no cost
    assert [o[0] for o in reply["outcomes"]] == [protocol.OK, protocol.CANCELLED, protocol.NOT_RUN], reply
    assert decoded(reply["outcomes"][0]) == (protocol.OK, 2)
    pid_after = decoded(w.run_batch([w.call("whoami")])["outcomes"][0])[1]
    assert pid_after != pid_before, "the slot process was not killed and replaced"


def test_cancel_of_a_running_thread_slot_call_answers_at_once_and_holds_the_slot_until_it_ends(
    cluster, tmp_path
):
    w = client(cluster, "thread1")
    gate, started = tmp_path / "release", tmp_path / "started"
    calls = [w.call("hold", str(gate), 30, str(started)), w.call("add", 2, 2)]
    bg = Background()
    bg.send("running", w, calls)
    # the slot taken is not enough: a cancel that lands before the call starts skips it, and its
    # batch-mate then runs (OK); this test is about a call that is running
    wait_for(started.exists, 10, 0.02, what="the first call running")
    cancelled_at = time.monotonic()
    assert w.cancel([calls[0][0]]) == 1
    wait_for(lambda: "running" in bg.replies, 1, 0.02, what="CANCELLED answered at once")
    assert time.monotonic() - cancelled_at < 1.0
    assert [o[0] for o in bg.replies["running"]["outcomes"]] == [protocol.CANCELLED, protocol.NOT_RUN]
    # a thread cannot be stopped: the abandoned task holds its slot until it really ends
    assert w.load()["running"] == 1 and w.info()["busy"] == 1, "the abandoned thread still runs"
    gate.touch()
    wait_for(lambda: w.load()["running"] == 0, 5, what="the slot free once the thread ended")


def test_thread_worker_whose_drain_timed_out_exits(cluster):
    proc: ManagedProcess = start_worker(
        cluster,
        [
            "--name",
            "stuck",
            "--services",
            "compute",
            "--pool",
            "thread",
            "--concurrency",
            "1",
            "--drain-timeout",
            "1",
        ],
    )
    try:
        w = client(cluster, "stuck")
        bg = Background()
        bg.send("stuck", w, [w.call("sleep", 60, timeout=120)])
        wait_for(lambda: w.load()["running"] == 1, 10)
        stopped_at = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=15) == 0
        assert time.monotonic() - stopped_at < 10, "the worker waited for its abandoned slot thread"
    finally:
        proc.kill()
