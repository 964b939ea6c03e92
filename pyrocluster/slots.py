"""A worker's execution slots: a batch of calls runs in one slot, in a child process or a thread.

Process slots are child processes started with ``spawn`` that speak msgpack over a pipe; a batch
that overruns its timeout gets its process killed and replaced, so a hung task never holds a
slot for ever. Thread slots suit I/O-bound tasks; a thread cannot be killed, so an overrunning
batch is reported as timed out and keeps its slot busy until it really ends.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing.connection import Connection
from typing import Any

from pyrocluster import codec
from pyrocluster.tasks import CRASHED, TIMEOUT, load_task_module, run_call

Call = list[Any]
"""``[name, args, kwargs, timeout_s]``."""


def run_calls(calls: list[Call]) -> list[list[Any]]:
    """Run a batch in this process, one call after the other."""
    return [run_call(c[0], c[1], c[2]) for c in calls]


def batch_timeout(calls: list[Call]) -> float:
    """The deadline of a batch: the longest timeout among its calls."""
    return max(float(c[3]) for c in calls)


def _failed_batch(calls: list[Call], kind: int, message: str) -> list[list[Any]]:
    error = {
        "type": "TimeoutError" if kind == TIMEOUT else "ProcessDied",
        "message": message,
        "traceback": "",
    }
    return [[kind, error, 0.0] for _ in calls]


def _exit_with_parent(interval_s: float = 1.0) -> None:
    """End this slot process soon after its worker is gone (SIGKILLed), even mid-task."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _child_main(conn: Connection, task_modules: list[str]) -> None:
    """Body of a slot process: load the user's tasks, then run batches until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (drain)
    _exit_with_parent()
    for spec in task_modules:
        load_task_module(spec)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        conn.send_bytes(codec.sendable_outcomes(run_calls(codec.unpack(data))))


class ProcessSlots:
    """``n`` child processes; a batch takes one for its whole run."""

    def __init__(self, n: int, task_modules: list[str]) -> None:
        self.total = n
        self.busy = 0
        self._modules = list(task_modules)
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: queue.Queue[tuple[Any, Connection]] = queue.Queue()
        self._lock = threading.Lock()
        for _ in range(n):
            self._idle.put(self._spawn())

    def _spawn(self) -> tuple[Any, Connection]:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_child_main, args=(child, self._modules), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def run(self, calls: list[Call]) -> list[list[Any]]:
        """Run a batch in a free child process (waiting for one); outcomes in call order."""
        proc, conn = self._idle.get()
        with self._lock:
            self.busy += 1
        try:
            conn.send_bytes(codec.pack(calls))
            timeout_s = batch_timeout(calls)
            if conn.poll(timeout_s):
                return list(codec.unpack(conn.recv_bytes()))
            proc.kill()
            proc.join()
            conn.close()
            proc, conn = self._spawn()
            return _failed_batch(calls, TIMEOUT, f"task did not finish within its timeout of {timeout_s:g} s")
        except (EOFError, OSError, BrokenPipeError):
            proc.join(timeout=1)
            conn.close()
            code = proc.exitcode
            proc, conn = self._spawn()
            return _failed_batch(calls, CRASHED, f"the task's process died (exit code {code})")
        finally:
            with self._lock:
                self.busy -= 1
            self._idle.put((proc, conn))

    def close(self) -> None:
        """Stop every child process."""
        while True:
            try:
                proc, conn = self._idle.get_nowait()
            except queue.Empty:
                break
            conn.close()
            proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
                proc.join()


class ThreadSlots:
    """``n`` threads; for I/O-bound tasks."""

    def __init__(self, n: int, task_modules: list[str]) -> None:
        for spec in task_modules:
            load_task_module(spec)
        self.total = n
        self.busy = 0
        self._free = threading.Semaphore(n)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(n, thread_name_prefix="slot")

    def _release(self, _future: Any) -> None:
        with self._lock:
            self.busy -= 1
        self._free.release()

    def run(self, calls: list[Call]) -> list[list[Any]]:
        """Run a batch on a free thread (waiting for one); outcomes in call order."""
        self._free.acquire()
        with self._lock:
            self.busy += 1
        future = self._pool.submit(lambda: codec.unpack(codec.sendable_outcomes(run_calls(calls))))
        future.add_done_callback(self._release)
        timeout_s = batch_timeout(calls)
        try:
            return list(future.result(timeout=timeout_s))
        except FutureTimeout:
            return _failed_batch(calls, TIMEOUT, f"task did not finish within its timeout of {timeout_s:g} s")

    def close(self) -> None:
        """Stop taking batches; running ones are not waited for."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def make_slots(pool: str, n: int, task_modules: list[str]) -> ProcessSlots | ThreadSlots:
    """Slots of the given kind (``process`` or ``thread``)."""
    return (ProcessSlots if pool == "process" else ThreadSlots)(n, task_modules)
