"""Reaching the cluster on a thread of its own while ``submit`` loads and checks the job file.

The look-up of the live workers (a name-server connection, the listing, a ping to each worker)
and the job's ``Cluster`` (its discovery's first listing, then its connections to the workers'
compute services) mostly wait on other processes; loading a big job file is CPU. The three go
side by side, so they cost the longest of them instead of their sum: with the
announcement's listener made off the job's way too, a 20,000-call job on two local workers starts
its run after 39 ms instead of 49 (medians of six alternating rounds at load 4-7.7; BENCHMARKS.md,
"W1 submit").

The outcome, or the error it met, is read only where the job reaches that step, so what is
reported first does not change: a job-file error still wins over an unreachable cluster. A
``Cluster`` the job never takes (its file or its checks failed) is closed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from pyrocluster.config import Settings
from pyrocluster.coordinator.cluster import Cluster
from pyrocluster.coordinator.preflight import LiveLookup, start_look_up

T = TypeVar("T")

Reached = tuple[LiveLookup, Cluster | None]
"""A first look-up of the live workers (its pings under way), and the job's cluster (None for a dry run)."""


def ahead(work: Callable[[], T], name: str) -> Future[T]:
    """Run ``work()`` on a daemon thread (a process that gives up on it does not wait for it);
    the future's ``result()`` re-raises what it raised."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as exc:  # kept for ``result()``, raised on the reader's thread
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def reach_ahead(settings: Settings, wait_s: float, with_cluster: bool) -> Future[Reached]:
    """Look the live workers up and (``with_cluster``) connect the job's ``Cluster``, side by side
    (both mostly wait on the name server and the workers: at load 14 the look-up took a median
    166 ms and the ``Cluster`` 55 ms, one after the other); the look-up's error wins."""

    def connected() -> Cluster:
        cluster = Cluster(settings=settings, wait=wait_s)
        cluster.open_channels("compute")  # the first batches find their connections made
        return cluster

    def reach() -> Reached:
        made = ahead(connected, "reach-cluster") if with_cluster else None
        try:
            first = start_look_up(settings)
        except BaseException:
            if made is not None:
                made.add_done_callback(_close_made)
            raise
        return first, made.result() if made is not None else None

    return ahead(reach, "reach-cluster")


def _close_made(made: Future[Cluster]) -> None:
    if made.exception() is None:
        made.result().close()


def give_up(reached: Future[Reached]) -> None:
    """The job stopped before taking what was reached: close its cluster, now or once it is made."""

    def close(done: Future[Reached]) -> None:
        if done.exception() is None:
            cluster = done.result()[1]
            if cluster is not None:
                cluster.close()

    reached.add_done_callback(close)
