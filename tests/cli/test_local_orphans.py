"""Processes of a local cluster stop when the process that started them is killed (no orphans),
although they no longer poll for it: each waits on its parent's pidfd."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from pyrocluster.local import PARENT_ENV, _wait_for_exit
from tests.conftest import wait_for

PARENT = """
import sys, time
from pyrocluster.local import LocalCluster
cluster = LocalCluster(1, ["--services", "compute", "--pool", "thread", "--concurrency", "1"])
print(" ".join(str(p.pid) for p in [cluster.nameserver, *cluster.workers]), flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(90)
def test_sigkilled_parent_takes_its_nameserver_and_workers_with_it() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    children: list[int] = []
    try:
        assert parent.stdout is not None
        children = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(children) == 2, children
        assert all(psutil.Process(pid).environ().get(PARENT_ENV) == str(parent.pid) for pid in children)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in children), 30, what="orphans stopping")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_waiting_for_a_process_that_is_not_our_parent_falls_back_to_polling() -> None:
    assert _wait_for_exit(os.getpid()) is False
