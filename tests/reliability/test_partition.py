"""A worker on another host drops off the network mid-job: its calls run elsewhere, nothing is lost.

Five hosts in network namespaces (name server, three workers, the coordinator running
``pyrocluster submit``), every process bound to its own address and proving the cluster secret.
One worker's switch port starts silently dropping every frame, so its TCP connections hang
rather than reset: only the coordinator's liveness probes can tell.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.conftest import TASKS_FILE
from tests.netns import Network, read_results, require_netns, wait_until, write_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PROBE_TIMEOUT_S = 3.0
"""The coordinator's default ``probe_timeout`` (SPEC 5.2): probe silence that sets a worker aside."""
PROBE_INTERVAL_S = 1.0
"""Seconds between liveness probes of a worker that holds work."""

TASK_S = 0.1
"""Seconds each task sleeps (``interval``): long enough that every slot is busy when the link is cut."""
TASKS = 1200
"""Tasks in the job: about 10 s of work on 12 slots, so the job outlives the partition and the return."""
SLOTS = 4
WORKER_ARGS = (
    *f"--services compute --pool thread --concurrency {SLOTS} --heartbeat 1".split(),
    "--tasks",
    TASKS_FILE,
)
FAILOVER_LIMIT_S = PROBE_TIMEOUT_S + PROBE_INTERVAL_S + 1.5
"""A cut worker's calls must be running elsewhere within this long: probe silence plus the probe
interval (the last answered probe may be up to one interval old), plus scheduling slack."""


@pytest.fixture
def net():
    require_netns()
    with Network(["ns", "w1", "w2", "w3", "coord"]) as network:
        yield network


ECHO_SERVER = """
import socket
s = socket.create_server((HOST, 7000))
print(" ready", flush=True)
conn, _ = s.accept()
while data := conn.recv(4096):
    conn.sendall(data)
"""
PINGER = """
import json, socket, time
c = socket.create_connection((HOST, 7000), timeout=2)
c.settimeout(0.5)
while True:
    try:
        c.sendall(b"x")
        c.recv(4096)
        print(json.dumps({"t": time.time(), "ok": True}), flush=True)
    except OSError as exc:
        print(json.dumps({"t": time.time(), "ok": False, "error": type(exc).__name__}), flush=True)
    time.sleep(0.1)
"""


def pings_since(pinger, since: float) -> list[dict]:
    """The pinger's round trips reported after ``since``."""
    return [json.loads(line) for t, line in list(pinger.lines) if t > since and line.startswith("{")]


@pytest.mark.timeout(60)
def test_harness_hosts_talk_only_on_their_switch_and_cuts_are_silent():
    require_netns()
    with Network(["a", "b"]) as net:
        prefix = net.prefix
        routes = net["a"].run(["ip", "route"], check=True).stdout.split("\n")
        # The hosts have their subnet and nothing else: no way out of the test network.
        assert [r.split()[0] for r in routes if r] == ["10.77.0.0/24"], routes
        server = net["b"].popen([sys.executable, "-c", f"HOST = {net['b'].ip!r}\n{ECHO_SERVER}"])
        server.wait_ready()
        pinger = net["a"].popen([sys.executable, "-c", f"HOST = {net['b'].ip!r}\n{PINGER}"])
        wait_until(lambda: any(p["ok"] for p in pings_since(pinger, 0)), 10, "a reaches b")
        for mode in ("drop", "down"):
            cut = net["b"].link_down(mode)
            wait_until(
                lambda cut=cut: len(pings_since(pinger, cut + 0.2)) >= 2, 10, f"pings during the {mode} cut"
            )
            during = pings_since(pinger, cut + 0.2)
            # Silent: the established connection times out; nothing resets or refuses it.
            assert all(not p["ok"] and p["error"] == "TimeoutError" for p in during), (mode, during)
            back = net["b"].link_up()
            wait_until(
                lambda back=back: any(p["ok"] for p in pings_since(pinger, back)),
                15,
                f"the same connection works again after the {mode} cut",
            )
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in listing and server.proc.poll() is not None and pinger.proc.poll() is not None


def started(record: dict) -> float:
    """Wall-clock time an ``interval`` call started on its worker (all hosts share the clock)."""
    return float(record["result"][1])


def test_silent_partition_fails_over_within_probe_timeout_and_the_worker_returns(net, tmp_path):
    net.start_nameserver("ns")
    net.start_workers(("w1", "w2", "w3"), *WORKER_ARGS)
    job = write_job(tmp_path / "part.yaml", "part", "interval", [TASK_S] * TASKS)
    out = tmp_path / "part.results.jsonl"
    submit, tail = net.submit(job, tmp_path)
    try:
        wait_until(
            lambda: sum(r["worker"] == "w1" for r in tail.poll()) >= 20, 40, "w1 takes part in the job"
        )
        cut_at = net["w1"].link_down("drop")
        reruns = wait_until(
            lambda: [r for r in tail.poll() if r["attempts"] > 1],
            3 * FAILOVER_LIMIT_S,
            "w1's calls re-run elsewhere",
        )
        detected_at = min(started(r) for r in reruns)
        # Keep it cut a little longer, so that the coordinator's re-probes fail too (backoff).
        time.sleep(max(0.0, cut_at + PROBE_TIMEOUT_S + 2.0 - time.time()))
        restored_at = net["w1"].link_up()
        back = wait_until(
            lambda: [r for r in tail.poll() if r["worker"] == "w1" and started(r) > restored_at],
            30,
            "w1 gets new work once its link is back",
        )
        assert submit.wait(90) == 0, submit.output
        raw = tail.poll()
    finally:
        tail.close()
    summary = json.loads(next(line for _, line in reversed(submit.lines) if line.startswith("{")))

    final = read_results(out)
    ids = [r["id"] for r in final]
    assert len(final) == TASKS and set(ids) == {f"part-{k}" for k in range(TASKS)}, "one line per task"
    assert all(r["status"] == "ok" for r in final), [r for r in final if r["status"] != "ok"][:3]
    recorded_twice = [i for i, n in Counter(r["id"] for r in raw).items() if n > 1]
    assert not recorded_twice, f"recorded more than once: {recorded_twice[:5]}"
    assert summary["ok"] == TASKS and summary["failed"] == 0

    # The calls w1 held when the link went were re-run on the others, and only those.
    reruns = [r for r in final if r["attempts"] > 1]
    assert 1 <= len(reruns) <= SLOTS, reruns
    assert all(r["worker"] != "w1" for r in reruns), reruns
    failover_first = detected_at - cut_at
    failover_last = max(started(r) for r in reruns) - cut_at
    assert failover_last <= FAILOVER_LIMIT_S, f"re-run {failover_last:.2f} s after the cut"
    # Nothing started on w1 while it was cut off; it got new work after it came back.
    cut_off = [r for r in final if r["worker"] == "w1" and cut_at + 0.5 < started(r) < restored_at]
    assert not cut_off, cut_off[:3]
    returned_after = min(started(r) for r in back) - restored_at
    print(
        f"\npartition figures: failover first {failover_first:.2f} s, "
        f"last {failover_last:.2f} s after the cut; "
        f"{len(reruns)} calls re-run; w1 used again {returned_after:.2f} s after the link returned; "
        f"job {summary['wall_s']:.1f} s, {TASKS} tasks, retried {summary['retried']}"
    )
