"""Killing a call keeps its batch-mates (SPEC 5.8), on real worker processes: a task that holds the
interpreter lock past its timeout, a task that tampers with the slot's timer signal, a cancel of a
call not started yet, and a slot process stopped while it starts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from pyrocluster import Cluster, TaskTimeout, protocol
from tests.conftest import TASKS_FILE, running_cluster, wait_for
from tests.helpers.rawworker import RawWorker, decoded

FOREVER = 10**11
"""``hog``'s ``n`` for a C call that would hold the interpreter lock for minutes."""
HELD = "its process was killed"
"""In the message of a TIMEOUT that the worker's fallback kill decided (the slot's timer could not act)."""


@pytest.fixture(scope="module")
def ns() -> Iterator[str]:
    """A name server and one one-slot process worker ``solo``, shared by the module."""
    args = ["--name", "solo", "--services", "compute", "--tasks", TASKS_FILE]
    with running_cluster([*args, "--pool", "process", "--concurrency", "1"]) as address:
        yield address


@pytest.fixture
def solo(ns: str) -> RawWorker:
    """A raw client of ``solo``, idle, its slot process started."""
    w = RawWorker(ns, "solo")
    wait_for(lambda: w.load()["running"] == 0, 10, what="the slot is free")
    w.run_batch([w.call("add", 0, 0)])
    return w


def kinds(reply: dict) -> list[int]:
    return [o[0] for o in reply["outcomes"]]


def runs(path: Path) -> list[str]:
    """The lines ``logged`` wrote to ``path``: one per run of the call."""
    return path.read_text().split() if path.exists() else []


def second_overruns(w: RawWorker, calls: list) -> tuple[float, dict]:
    """Run a batch of three whose second call overruns: the seconds it took and that call's error."""
    started = time.monotonic()
    reply = w.run_batch(calls)
    elapsed = time.monotonic() - started
    assert kinds(reply) == [protocol.OK, protocol.TIMEOUT, protocol.NOT_RUN], reply
    return elapsed, decoded(reply["outcomes"][1])[1]


def pid(w: RawWorker) -> int:
    return decoded(w.run_batch([w.call("whoami")])["outcomes"][0])[1]


def test_a_gil_holding_overrun_keeps_the_finished_batch_mates_and_sends_back_the_rest(solo, tmp_path):
    keys = ["a", "b", "hog", "c", "d"]
    calls = [
        solo.call(
            "logged", k, str(tmp_path / k), 0, FOREVER if k == "hog" else 0, timeout=0.5 if k == "hog" else 30
        )
        for k in keys
    ]
    started = time.monotonic()
    reply = solo.run_batch(calls)
    elapsed = time.monotonic() - started
    assert kinds(reply) == [protocol.OK, protocol.OK, protocol.TIMEOUT, protocol.NOT_RUN, protocol.NOT_RUN], (
        reply
    )
    assert [decoded(o)[1] for o in reply["outcomes"][:2]] == ["a", "b"]
    error = decoded(reply["outcomes"][2])[1]
    assert error["type"] == "TaskTimeout" and HELD in error["message"], "the slot's timer could not act"
    assert 0.9 < elapsed < 8, elapsed
    assert [runs(tmp_path / k) for k in keys] == [["a"], ["b"], ["hog"], [], []]
    assert decoded(solo.run_batch([solo.call("add", 2, 2)])["outcomes"][0]) == (protocol.OK, 4)


def test_through_a_coordinator_each_batch_mate_of_a_gil_holding_overrun_runs_exactly_once(ns, tmp_path):
    gate, before = tmp_path / "gate", tmp_path / "started"
    keys = [f"k{i}" for i in range(6)]
    with Cluster(ns, retries=0) as cluster:
        list(cluster.map("add", range(200), range(200)))  # batches of cheap calls grow large
        warm = [cluster.submit("logged", f"w{i}", str(tmp_path / "warm")) for i in range(300)]
        assert [f.result(30) for f in warm] == [f"w{i}" for i in range(300)]
        blocker = cluster.submit("hold", str(gate), 30, str(before))
        wait_for(before.exists, 10, what="the slot busy")
        futures = {k: cluster.submit("logged", k, str(tmp_path / k)) for k in keys[:3]}
        hog = cluster.options(timeout=0.5).submit("logged", "hog", str(tmp_path / "hog"), 0, FOREVER)
        futures |= {k: cluster.submit("logged", k, str(tmp_path / k)) for k in keys[3:]}
        gate.touch()  # the queued calls go out together, once the slot is free
        blocker.result(30)
        assert {k: f.result(30) for k, f in futures.items()} == {k: k for k in keys}
        with pytest.raises(TaskTimeout):
            hog.result(30)
    assert {k: runs(tmp_path / k) for k in keys} == {k: [k] for k in keys}, "a batch-mate ran twice"
    assert all(f.attempts == 1 for f in futures.values()), [f.attempts for f in futures.values()]
    assert runs(tmp_path / "hog") == ["hog"]


@pytest.mark.parametrize("end", ["timeout", "cancel"])
def test_a_task_stopped_in_its_slot_takes_the_processes_it_started_with_it(ns, tmp_path, end):
    """A child a task started would otherwise live on under init after its slot process ended."""
    pid_file = tmp_path / "child.pid"
    with Cluster(ns, retries=0) as cluster:
        future = cluster.options(timeout=2 if end == "timeout" else 60).submit(
            "spawn_and_wait", str(pid_file), 30
        )
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), 20, what="the child started")
        child = int(pid_file.read_text())
        if end == "cancel":
            assert cluster.cancel(future)
        with pytest.raises(TaskTimeout if end == "timeout" else CancelledError):
            future.result(30)
    wait_for(lambda: not alive(child), 10, what=f"the task's child {child} gone")


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie left for init to reap does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("how", ["alarm0", "handler", "itimer"])
def test_a_task_that_tampers_with_the_timer_signal_leaves_the_next_batch_a_fresh_slot(solo, tmp_path, how):
    first = pid(solo)
    # a quick call arms the slot's timer for 1 s; the task then changes the signal's handling
    reply = solo.run_batch([solo.call("add", 1, 1, timeout=1), solo.call("tamper", how)])
    assert kinds(reply) == [protocol.OK, protocol.OK], reply
    assert pid(solo) == first, "a task that returned normally does not cost its slot process"
    calls = [
        solo.call("logged", "a", str(tmp_path / "a")),
        solo.call("hold", str(tmp_path / "never"), timeout=1.5),
        solo.call("logged", "b", str(tmp_path / "b")),
    ]
    elapsed, error = second_overruns(solo, calls)
    assert error["type"] == "TaskTimeout" and HELD not in error["message"], "the slot's own timer acted"
    assert "1.5 s" in error["message"] and elapsed < 5, elapsed
    assert (runs(tmp_path / "a"), runs(tmp_path / "b")) == (["a"], [])


def test_a_call_after_a_task_that_took_the_timer_signal_in_the_same_batch_is_stopped_by_the_fallback(
    solo, tmp_path
):
    calls = [
        solo.call("tamper", "handler"),
        solo.call("hold", str(tmp_path / "never"), timeout=0.5),
        solo.call("logged", "b", str(tmp_path / "b")),
    ]
    elapsed, error = second_overruns(solo, calls)
    assert error["type"] == "TaskTimeout" and HELD in error["message"], "the worker's fallback kill acted"
    assert elapsed < 8, elapsed
    assert runs(tmp_path / "b") == []
    assert decoded(solo.run_batch([solo.call("add", 2, 2)])["outcomes"][0]) == (protocol.OK, 4)


def test_cancel_of_a_call_not_started_skips_it_and_the_running_call_finishes(solo, tmp_path):
    first = pid(solo)
    gate, started, marker = tmp_path / "gate", tmp_path / "started", tmp_path / "never"
    calls = [
        solo.call("hold", str(gate), 30, str(started)),
        solo.call("add", 2, 3),
        solo.call("logged", "x", str(marker)),
    ]
    bg: dict = {}
    thread = threading.Thread(target=lambda: bg.update(reply=solo.run_batch(calls)), daemon=True)
    thread.start()
    wait_for(started.exists, 10, 0.02, what="the first call running")
    assert solo.cancel([calls[2][0]]) == 1
    gate.touch()
    thread.join(30)
    reply = bg["reply"]
    assert kinds(reply) == [protocol.OK, protocol.OK, protocol.CANCELLED], reply
    assert decoded(reply["outcomes"][1]) == (protocol.OK, 5)
    assert not marker.exists(), "the cancelled call ran"
    assert pid(solo) == first, "the slot process was killed for a call that had not started"


def test_a_slot_process_stopped_while_it_loads_its_tasks_ends_without_a_traceback(tmp_path):
    slow = tmp_path / "slowtasks.py"
    slow.write_text("import time\n\ntime.sleep(1.0)  # a tasks module that takes a while to import\n")
    script = textwrap.dedent(
        f"""
        from pyrocluster.slots.process import SlotProcess, slot_context

        if __name__ == "__main__":
            slot = SlotProcess(slot_context(), [{str(slow)!r}], 1 << 20)
            slot.close()
            print("closed")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "closed\n", "")


class Refusing:
    """A slot context whose fork server refuses the first ``refusals`` starts, as one does while a
    signal to the worker's whole process group ends it (it still looks alive, its socket is gone)."""

    def __init__(self, refusals: int) -> None:
        from pyrocluster.slots.process import slot_context

        self.ctx = slot_context()
        self.refusals = refusals

    def __getattr__(self, name: str) -> object:
        return getattr(self.ctx, name)

    def Process(self, *args: object, **kw: object) -> object:  # noqa: N802 (multiprocessing's name)
        proc = self.ctx.Process(*args, **kw)
        if self.refusals > 0:
            self.refusals -= 1

            def refuse() -> None:
                raise ConnectionRefusedError(111, "Connection refused")

            proc.start = refuse
        return proc


def test_a_slot_process_is_started_again_when_the_fork_server_refuses_a_start():
    from pyrocluster.slots.process import READY, SlotProcess

    slot = SlotProcess(Refusing(2), [], 1 << 20)
    try:
        assert slot.conn.poll(30) and slot.conn.recv_bytes() == READY
        slot._ctx = Refusing(1)
        slot.replace()  # as the worker replaces a slot process that died
        assert slot.conn.poll(30) and slot.conn.recv_bytes() == READY
    finally:
        slot.close()


def test_a_slot_whose_process_could_not_be_started_again_still_closes(monkeypatch):
    from pyrocluster.slots import process

    monkeypatch.setattr(process, "START_RETRIES_S", (0.0,), raising=False)
    slot = process.SlotProcess(Refusing(0), [], 1 << 20)
    slot._ctx = Refusing(2)
    with pytest.raises(ConnectionRefusedError):
        slot.replace()
    slot.close()  # the worker's stop: no process to wait for, nothing raised
    assert not slot.proc.is_alive()
