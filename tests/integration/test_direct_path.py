"""The direct path (a lone call straight to a worker's slot process) on real workers: it is taken,
and a kill, an overrun, a cancel, a race between coordinators, a drain and bad credentials end as
on the ``run_batch`` path."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

import Pyro5.core
import Pyro5.errors
import pytest

from pyrocluster import Cluster, TaskFailed, TaskTimeout, auth, codec, config, revocations, tokens
from pyrocluster.config import Settings
from pyrocluster.coordinator import readhere
from pyrocluster.coordinator.wire import lonecall
from pyrocluster.handshake import credential
from pyrocluster.local import start_nameserver, start_worker
from pyrocluster.slots.direct import DIRECT_SUFFIX
from tests.conftest import TASKS_FILE, Processes, running_cluster, wait_for
from tests.helpers.rawworker import RawWorker
from tests.helpers.roles import secret_env
from tests.integration.test_tls_commands import CLEAN_ENV, make_pki, tls_flags

FOREVER = 10**11
"""``hog``'s ``n`` for a C call that would hold the interpreter lock for minutes."""


@pytest.fixture(scope="module")
def ns() -> Iterator[str]:
    """A name server and one one-slot process worker ``solo``, shared by the module."""
    args = ["--name", "solo", "--services", "compute", "--tasks", TASKS_FILE, "--concurrency", "1"]
    with running_cluster(args) as address:
        yield address


@pytest.fixture
def solo(ns: str) -> RawWorker:
    """A raw client of ``solo``, once its slot is lent again (nothing of an earlier test runs)."""
    w = RawWorker(ns, "solo")
    wait_for(lambda: w.load().get("direct"), 15, what="the slot lent")
    return w


def direct_calls(w: RawWorker) -> int:
    return int(w.info()["direct"])


def went_direct(cluster: Cluster, w: RawWorker) -> int:
    """Lone calls until one goes straight to the slot (the coordinator learns the ports from the
    loads it sees); the slot process's pid."""
    before = direct_calls(w)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pid = int(cluster.submit("whoami").result(10))
        if direct_calls(w) > before:
            return pid
        time.sleep(0.05)
    pytest.fail("no lone call went straight to the slot within 15 s")


def side_by_side(run: Callable[[str], None], *names: str) -> None:
    """``run(name)`` for each name, each on a thread of its own at once; all joined."""
    threads = [threading.Thread(target=run, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


def slot_uri(w: RawWorker, port: int) -> str:
    uri = Pyro5.core.URI(w.entry.uris["compute"])
    return f"PYRO:{uri.object}{DIRECT_SUFFIX}@{uri.host}:{port}"


def test_lone_calls_go_straight_to_the_slot_and_count_in_the_worker(solo: RawWorker) -> None:
    with Cluster(solo.settings.ns_address) as cluster:
        went_direct(cluster, solo)
        before, done = direct_calls(solo), solo.info()["done"]
        # more than the slot's records of ended calls hold before it asks the worker to read them
        assert [cluster.submit("add", i, 1).result(10) for i in range(400)] == [i + 1 for i in range(400)]
        assert cluster.submit("fail").exception(10) is not None  # a task's failure comes back as usual
    info = solo.info()
    assert info["direct"] >= before + 380, info  # a few may have gone the ordinary way
    assert info["done"] >= done + 400 and info["failed"] >= 1, info


def test_a_slot_killed_mid_call_fails_the_call_over_as_a_crash(solo: RawWorker, tmp_path: Path) -> None:
    gate, started = tmp_path / "gate", tmp_path / "started"
    with Cluster(solo.settings.ns_address, retries=1) as cluster:
        pid = went_direct(cluster, solo)
        future = cluster.submit("hold", str(gate), 30, str(started))
        wait_for(started.exists, 10, what="the call running")
        os.kill(pid, signal.SIGKILL)
        gate.touch()  # the second attempt ends at once
        assert future.result(20) == str(gate)
        assert future.attempts == 2, "the crash cost an attempt, as on the run_batch path"
        assert cluster.submit("whoami").result(10) != pid
    with Cluster(solo.settings.ns_address, retries=0) as cluster:
        pid = went_direct(cluster, solo)
        started.unlink()
        gate.unlink()
        future = cluster.submit("hold", str(gate), 30, str(started))
        wait_for(started.exists, 10, what="the call running")
        os.kill(pid, signal.SIGKILL)
        error = future.exception(20)
        assert error is not None and "died" in str(error), error


def test_a_gil_holding_overrun_times_out_and_the_new_slot_is_reached_directly(solo: RawWorker) -> None:
    with Cluster(solo.settings.ns_address, retries=0) as cluster:
        pid = went_direct(cluster, solo)
        port = solo.load()["direct"]
        started = time.monotonic()
        with pytest.raises(TaskTimeout, match="its process was killed"):
            cluster.options(timeout=0.5).submit("hog", FOREVER).result(20)
        assert time.monotonic() - started < 10
        wait_for(lambda: solo.load().get("direct") not in (None, port), 15, what="a new port")
        assert went_direct(cluster, solo) != pid, "the slot process was replaced"


def test_a_running_direct_call_is_cancelled_by_killing_its_slot(solo: RawWorker, tmp_path: Path) -> None:
    gate, started = tmp_path / "gate", tmp_path / "started"
    with Cluster(solo.settings.ns_address) as cluster:
        pid = went_direct(cluster, solo)
        future = cluster.submit("hold", str(gate), 30, str(started))
        wait_for(started.exists, 10, what="the call running")
        assert cluster.cancel(future)
        with pytest.raises(CancelledError):
            future.result(5)
        assert wait_for(lambda: cluster.submit("whoami").result(10) != pid, 15, what="a new slot process")
    assert not gate.exists()


def test_a_slot_running_a_direct_call_is_taken_in_the_load_every_coordinator_sees(
    solo: RawWorker, tmp_path: Path
) -> None:
    gate, started = tmp_path / "gate", tmp_path / "started"
    with Cluster(solo.settings.ns_address) as cluster:
        went_direct(cluster, solo)
        future = cluster.submit("hold", str(gate), 30, str(started))
        wait_for(started.exists, 10, what="the direct call running")
        try:
            load = solo.load()
            assert load["running"] == 1 and "direct" not in load, load
        finally:
            gate.touch()
        assert future.result(20) == str(gate)
    wait_for(lambda: solo.load().get("direct"), 10, what="the slot offered again")
    assert solo.load()["running"] == 0


def test_a_batch_waiting_for_a_direct_call_is_not_counted_busy(solo: RawWorker, tmp_path: Path) -> None:
    """The gate admits a batch while a direct call holds the only slot; the batch waits for the
    slot, so the worker's ``busy`` stays at its one slot (SPEC: never more than ``slots``)."""
    gate, started = tmp_path / "gate", tmp_path / "started"
    with Cluster(solo.settings.ns_address) as cluster:
        went_direct(cluster, solo)
        future = cluster.submit("hold", str(gate), 30, str(started))
        wait_for(started.exists, 10, what="the direct call running")
        batch = threading.Thread(target=solo.run_batch, args=([solo.call("add", 1, 1)],), daemon=True)
        batch.start()
        try:
            wait_for(lambda: solo.load()["queued"] == 1, 10, what="the batch admitted, waiting for the slot")
            info = solo.info()
            assert info["busy"] <= info["slots"] == 1, info
        finally:
            gate.touch()
            batch.join(20)
        assert future.result(20) == str(gate)


def test_two_coordinators_racing_for_one_slot_run_every_call_once(solo: RawWorker, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    results: dict[str, list[Any]] = {}

    def send(name: str) -> None:
        with Cluster(solo.settings.ns_address) as cluster:
            results[name] = [cluster.submit("logged", f"{name}{i}", str(log)).result(30) for i in range(40)]

    side_by_side(send, "a", "b")
    expected = {name: [f"{name}{i}" for i in range(40)] for name in ("a", "b")}
    assert results == expected
    runs = log.read_text().split()
    assert sorted(runs) == sorted(expected["a"] + expected["b"]), "a call ran twice or never"


def test_a_draining_worker_lends_no_slot(processes: Processes, nameserver: str) -> None:
    args = ["--name", "drainer", "--services", "compute", "--tasks", TASKS_FILE, "--concurrency", "1"]
    processes.add(start_worker(nameserver, args))
    w = RawWorker(nameserver, "drainer")
    port = wait_for(lambda: w.load().get("direct"), 15, what="the slot lent")[0]
    with auth.make_proxy(w.entry.uris["control"], w.settings, timeout_s=10) as control:
        assert control.drain()
    assert "direct" not in w.load()
    with auth.make_proxy(slot_uri(w, port), w.settings, timeout_s=10) as slot:
        reply = slot.run_batch({"from": "test", "calls": [w.call("add", 1, 2)]})
    assert reply == {"busy": True}, "a draining worker's slot runs nothing"
    assert w.run_batch([w.call("add", 1, 2)])["refused"] == "draining"


SECRET = "direct-secret-77a1"


def test_the_slot_port_refuses_a_wrong_secret_a_weak_role_and_a_revoked_token(processes: Processes) -> None:
    env = secret_env(SECRET)
    ns_proc, ns = start_nameserver(env=env)
    processes.add(ns_proc)
    args = ["--name", "guarded", "--services", "compute", "--tasks", TASKS_FILE, "--concurrency", "1"]
    processes.add(start_worker(ns, args, env=env))
    good = Settings(secret=SECRET.encode()).with_ns(ns)
    config.apply(good)
    with auth.make_proxy(f"PYRO:Pyro.NameServer@{ns}", good, timeout_s=5) as nsp:
        compute = str(nsp.lookup("pyrocluster.worker.guarded.compute"))
        control = str(nsp.lookup("pyrocluster.worker.guarded.control"))

    def load() -> dict[str, Any]:
        with auth.make_proxy(control, good, timeout_s=5) as proxy:
            return dict(proxy.load())

    port = wait_for(lambda: load().get("direct"), 15, what="the slot lent")[0]
    uri = Pyro5.core.URI(compute)
    slot = f"PYRO:{uri.object}{DIRECT_SUFFIX}@{uri.host}:{port}"
    request = {"from": "test", "calls": [["1", "add", codec.pack_call([1, 2], {}), 10.0, 0]]}

    wrong = Settings(secret=b"not-the-secret").with_ns(ns)
    with pytest.raises(auth.AuthenticationRefused), auth.make_proxy(slot, wrong, timeout_s=5) as proxy:
        proxy.run_batch(request)

    viewer = tokens.issue(SECRET.encode(), "t-view", tokens.Role.VIEWER, time.time(), 3600)
    with auth.make_proxy(slot, Settings(token=viewer).with_ns(ns), timeout_s=5) as proxy:
        for _ in range(2):  # refused, and the connection stays (a role refusal is not a credential's)
            with pytest.raises(PermissionError, match="may not run tasks"):
                proxy.run_batch(request)

    token = tokens.issue(SECRET.encode(), "t-sub", tokens.Role.SUBMITTER, time.time(), 3600)
    with auth.make_proxy(f"PYRO:Pyro.NameServer@{ns}", good, timeout_s=5) as nsp:
        revocations.record_token(nsp, credential(None, token).peer)  # type: ignore[union-attr]
    holder = auth.make_proxy(slot, Settings(token=token).with_ns(ns), timeout_s=5)
    try:
        assert holder.run_batch(request)["outcomes"][0][0] == 0, "the token works before its revocation"
        with auth.make_proxy(f"PYRO:Pyro.NameServer@{ns}", good, timeout_s=5) as nsp:
            revocations.publish_revocation(nsp, "t-sub", int(time.time() * 1000))

        def refused() -> bool:
            try:
                holder.run_batch(request)
            except (Pyro5.errors.SecurityError, Pyro5.errors.CommunicationError) as exc:
                return "revoked" in str(exc)
            return False

        wait_for(refused, 10, what="the slot refuses the revoked token")
    finally:
        holder._pyroRelease()


def test_lone_calls_reach_the_slot_under_mutual_tls(tmp_path: Path, processes: Processes) -> None:
    pki = make_pki(tmp_path / "pki", "ns", "w1", "client")
    ns_proc, ns = start_nameserver(tls_flags(pki, "ns"), env=CLEAN_ENV)
    processes.add(ns_proc)
    args = ["--name", "w1", "--services", "compute", "--tasks", TASKS_FILE, "--concurrency", "1"]
    processes.add(start_worker(ns, [*args, *tls_flags(pki, "w1")], env=CLEAN_ENV))
    client = Settings(
        tls_cert=str(pki / "client.crt"), tls_key=str(pki / "client.key"), tls_ca=str(pki / "ca.crt")
    ).with_ns(ns)
    try:
        with Cluster(settings=client) as cluster:

            def direct() -> int:
                return int(cluster.status()["workers"][0]["direct"])

            before = direct()
            for _ in range(20):
                assert [cluster.submit("add", i, 1).result(10) for i in range(10)] == list(range(1, 11))
                if direct() > before:
                    return
        pytest.fail("no lone call went straight to the slot under TLS")
    finally:
        # Pyro5's configuration is global to the process: leave it without TLS for later tests
        # that make proxies without a Cluster (which would apply their own settings).
        config.apply(Settings())


def test_a_slot_killed_while_the_caller_reads_its_reply_fails_the_call_over(
    solo: RawWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readhere, "INLINE_WAIT_S", 60.0)  # the caller holds the socket throughout
    reading: list[Any] = []
    read = lonecall.read
    monkeypatch.setattr(lonecall, "read", lambda *a, **k: reading.append(a[1]) or read(*a, **k))
    gate, started = tmp_path / "gate", tmp_path / "started"
    with Cluster(solo.settings.ns_address, retries=1) as cluster:
        pid = went_direct(cluster, solo)
        reading.clear()
        future = cluster.submit("hold", str(gate), 30, str(started))

        def kill() -> None:
            wait_for(started.exists, 10, what="the call running")
            wait_for(lambda: reading and reading[0].claimed, 10, what="the caller reading its reply")
            os.kill(pid, signal.SIGKILL)
            gate.touch()  # the second attempt ends at once

        killer = threading.Thread(target=kill, daemon=True)
        killer.start()
        assert future.result(20) == str(gate)
        killer.join(10)
        assert future.attempts == 2, "the crash cost an attempt"


def test_a_direct_call_cut_under_its_reader_ends_once_and_its_connection_is_not_kept(
    solo: RawWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readhere, "INLINE_WAIT_S", 60.0)  # the caller holds the socket throughout
    gate, started = tmp_path / "gate", tmp_path / "started"
    with Cluster(solo.settings.ns_address, retries=1) as cluster:
        went_direct(cluster, solo)
        link = cluster._dispatcher.links["solo"]
        assert link.direct is not None
        future = cluster.submit("hold", str(gate), 30, str(started))
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.append(future.result(30)), daemon=True)
        reader.start()
        wait_for(started.exists, 10, what="the call running")
        (channel,) = link.direct.busy
        wait_for(lambda: channel.claimed, 10, what="the caller reading its reply")
        link.abort_calls()  # what setting the worker aside does: the connection is cut
        gate.touch()
        reader.join(30)
        assert got == [str(gate)], "the call ends once, with its outcome"
        assert not channel.connected, "the cut connection is closed"
        assert all(channel not in idle for idle in link.direct._idle.values()), "and not kept"
        went_direct(cluster, solo)  # the next lone calls reach the slot on a fresh connection


def test_a_lone_call_nobody_waits_for_is_read_and_its_slot_freed(solo: RawWorker) -> None:
    with Cluster(solo.settings.ns_address) as cluster:
        went_direct(cluster, solo)
        before = direct_calls(solo)
        future = cluster.submit("add", 2, 3)
        wait_for(lambda: cluster.in_flight() == 0, 10, what="the reply read with nobody asking")
        assert future.result(5) == 5
        assert direct_calls(solo) == before + 1, "it went straight to the slot"


def test_lone_calls_waited_for_by_wait_as_completed_or_a_callback_all_end(solo: RawWorker) -> None:
    with Cluster(solo.settings.ns_address, retries=0) as cluster:
        went_direct(cluster, solo)
        futures = [cluster.submit("add", i, 1) for i in range(40)]
        done = concurrent.futures.as_completed(futures, timeout=30)
        assert sorted(f.result(0) for f in done) == [i + 1 for i in range(40)]
        hung = cluster.options(timeout=0.5).submit("hog", FOREVER)  # killed at its timeout
        finished, _ = concurrent.futures.wait([hung], timeout=20)
        assert finished == {hung} and isinstance(hung.exception(0), TaskTimeout)
        called: list[Any] = []
        lone = cluster.submit("add", 5, 5)
        lone.add_done_callback(called.append)
        wait_for(lambda: called == [lone], 10, what="the done callback")
        assert lone.result(0) == 10


def test_a_lone_call_cancelled_while_its_caller_waits_ends_cancelled(solo: RawWorker, tmp_path: Path) -> None:
    gate, started = tmp_path / "gate", tmp_path / "started"
    with Cluster(solo.settings.ns_address) as cluster:
        went_direct(cluster, solo)
        future = cluster.submit("hold", str(gate), 30, str(started))
        canceller = threading.Thread(
            target=lambda: (wait_for(started.exists, 10, what="the call running"), cluster.cancel(future)),
            daemon=True,
        )
        canceller.start()
        with pytest.raises(CancelledError):
            future.result(20)
        canceller.join(10)
        assert cluster.submit("add", 1, 1).result(10) == 2, "the slot serves again"
    assert not gate.exists()


def test_a_busy_answer_sends_the_call_by_run_batch(processes: Processes, nameserver: str) -> None:
    """A slot answers ``busy`` to a call over the worker's value cap (it runs only plain calls):
    the call then goes through the worker's ``run_batch``, whose answer is the call's outcome."""
    args = ["--name", "capped", "--services", "compute", "--tasks", TASKS_FILE, "--concurrency", "1"]
    processes.add(start_worker(nameserver, [*args, "--max-value-bytes", "2048"]))
    w = RawWorker(nameserver, "capped")
    wait_for(lambda: w.load().get("direct"), 15, what="the slot lent")
    with Cluster(nameserver) as cluster:
        went_direct(cluster, w)
        before = direct_calls(w)
        with pytest.raises(TaskFailed, match="ArgumentsTooLarge|max_value_bytes"):
            cluster.submit("echo", "x" * 8000).result(20)
        assert direct_calls(w) == before, "the slot ran nothing"
        assert cluster.submit("add", 1, 2).result(10) == 3
