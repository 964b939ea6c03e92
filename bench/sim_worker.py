"""Lightweight fake workers for the 1,000-worker simulation (``bench.sim``).

``python -m bench.sim_worker --ns HOST:PORT --count N --prefix P`` runs N fake workers in this
one process. Each has a daemon of its own (its own port, as a real worker has) with a control
object and a trivial ``compute`` service; all the daemons share one multiplexed event loop
(Pyro5 ``combine``), so a process holds hundreds of workers in one thread. Each worker is
registered in the real name server exactly as a real worker registers (``registry`` naming,
slots, and ``pyrocluster.task:<name>`` metadata of this release's protocol) and re-checks its registration
every heartbeat, like a real worker, so the name server carries the real churn.

``compute.run_batch`` speaks the worker protocol (docs/protocol.md: ``{"from", "calls"}``, or the
calls as columns, with msgpack payloads; outcomes with packed values and ``load``) and, for the
coordinator before v2,
the v1 list of ``[name, args, kwargs, timeout_s]``. It runs ``add`` and ``echo`` at once; any
other task is ``UNKNOWN_TASK`` (v2) or an error (v1). Counters of every call kind go to a stats
object whose URI is printed with the ready line; the process exits when its stdin closes.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import Pyro5.api
import Pyro5.errors

from pyrocluster import codec, config
from pyrocluster.auth import SecureDaemon
from pyrocluster.config import Settings
from pyrocluster.nameserver import registry
from pyrocluster.protocol import ERROR, OK
from pyrocluster.services.batchcolumns import column_rows, is_columns

UNKNOWN_TASK = 6
"""Outcome kind of protocol v2 for a task the worker does not offer."""
TASKS: dict[str, Callable[..., Any]] = {"add": lambda a, b: a + b, "echo": lambda x: x}
"""What a fake worker runs (instantly)."""
META_TASK = "pyrocluster.task:"


def _as_bytes(value: Any) -> bytes:
    """A ``bytes`` field as it arrives: bytes (msgpack) or serpent's base64 dict."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    import serpent

    return bytes(serpent.tobytes(value))


class Counters:
    """Calls received by every fake worker of this process (one event loop: no lock needed)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.workers_with_work: set[str] = set()
        self.tasks = 0


@Pyro5.api.expose
class FakeControl:
    """A worker's control object: ping, load, info, stats, drain (a no-op)."""

    def __init__(self, name: str, address: str, counters: Counters) -> None:
        self.name, self.address, self.counters = name, address, counters
        self.started = time.time()
        self.done = 0

    def ping(self) -> str:
        """The liveness probe (v1)."""
        self.counters.calls["ping"] += 1
        return "pong"

    def load(self) -> dict[str, int]:
        """The liveness probe of v2."""
        self.counters.calls["load"] += 1
        return {"slots": 1, "running": 0, "queued": 0}

    def info(self) -> dict[str, Any]:
        """What ``status`` shows of a worker."""
        self.counters.calls["info"] += 1
        return {
            "name": self.name,
            "address": self.address,
            "services": ["compute"],
            "tags": [],
            "tasks": sorted(TASKS),
            "state": "ready",
            "slots": 1,
            "busy": 0,
            "done": self.done,
            "failed": 0,
            "mean_ms": 0.0,
            "uptime_s": round(time.time() - self.started, 1),
            "cpu_percent": 0.0,
            "rss_mb": 0.0,
        }

    def stats(self) -> dict[str, Any]:
        """The counters only."""
        return {k: v for k, v in self.info().items() if k not in ("name", "address", "services", "tags")}

    def drain(self) -> bool:
        """Accepted and ignored: a fake worker never leaves on its own."""
        return True


@Pyro5.api.expose
class FakeCompute:
    """A ``compute`` service with one slot that runs ``add``/``echo`` at once."""

    def __init__(self, control: FakeControl, counters: Counters) -> None:
        self.control, self.counters = control, counters

    def tasks(self) -> list[str]:
        """The catalog."""
        return sorted(TASKS)

    def run_batch(self, request: Any) -> dict[str, Any]:
        """Protocol v2 (a dict) or v1 (a list of calls)."""
        self.counters.calls["run_batch"] += 1
        self.counters.workers_with_work.add(self.control.name)
        if isinstance(request, dict):
            calls = column_rows(request) if is_columns(request) else request.get("calls")
            outcomes = [self._run_v2(c) for c in calls or []]
            reply: dict[str, Any] = {"outcomes": outcomes, "load": {"slots": 1, "running": 0, "queued": 0}}
        else:
            reply = {"outcomes": [self._run_v1(c) for c in request]}
        self.counters.tasks += len(reply["outcomes"])
        self.control.done += len(reply["outcomes"])
        return reply

    @staticmethod
    def _run_v2(call: Any) -> list[Any]:
        _call_id, name, payload, _timeout_s, _priority = call
        fn = TASKS.get(name)
        if fn is None:
            error = {"type": "UnknownTask", "message": f"unknown task {name!r}", "traceback": ""}
            return [UNKNOWN_TASK, codec.pack(error), 0.0]
        args, kwargs = codec.unpack(_as_bytes(payload))
        return [OK, codec.pack(fn(*args, **kwargs)), 0.0]

    @staticmethod
    def _run_v1(call: Any) -> list[Any]:
        name, args, kwargs, _timeout_s = call
        fn = TASKS.get(name)
        if fn is None:
            return [ERROR, {"type": "UnknownTask", "message": f"unknown task {name!r}", "traceback": ""}, 0.0]
        return [OK, fn(*args, **kwargs), 0.0]


@Pyro5.api.expose
class SimStats:
    """This process's counters, for the benchmark."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def stats(self) -> dict[str, Any]:
        """Calls by kind, tasks run, and how many of the fake workers got a batch."""
        return {
            "calls": dict(self.counters.calls),
            "tasks": self.counters.tasks,
            "workers_with_work": len(self.counters.workers_with_work),
        }

    def reset(self) -> None:
        """Zero the counters."""
        self.counters.calls.clear()
        self.counters.workers_with_work.clear()
        self.counters.tasks = 0


def register(ns: Any, name: str, uris: dict[str, str]) -> None:
    """Register one fake worker as ``Worker._register`` does, with the v2 task catalog."""
    for service, uri in uris.items():
        meta = registry.service_metadata(name, service, [], 1 if service == "compute" else 0)
        if service == "compute":
            meta.update(META_TASK + t for t in TASKS)
        ns.register(registry.object_name(name, service), uri, safe=False, metadata=meta)


def heartbeat_loop(settings: Settings, workers: list[tuple[str, dict[str, str]]], period_s: float) -> None:
    """Each worker checks its registration once per ``period_s`` (spread evenly), as real ones do."""
    ns = registry.connect(settings)
    gap = period_s / max(1, len(workers))
    while True:
        for name, uris in workers:
            started = time.monotonic()
            try:
                listing = ns.list(prefix=f"{registry.WORKER_PREFIX}{name}.")
                if {str(v) for v in listing.values()} != set(uris.values()):
                    register(ns, name, uris)
            except Pyro5.errors.PyroError:
                ns._pyroRelease()
                ns = registry.connect(settings)
            time.sleep(max(0.0, gap - (time.monotonic() - started)))


def main(argv: list[str] | None = None) -> int:
    """Start, register, print ``ready <seconds to register> <stats uri>``, serve until stdin closes."""
    ap = argparse.ArgumentParser(prog="python -m bench.sim_worker")
    ap.add_argument("--ns", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--heartbeat", type=float, default=5.0, help="seconds between registration checks")
    args = ap.parse_args(argv)
    settings = Settings.from_sources(ns=args.ns)
    config.apply(settings)
    Pyro5.config.SERVERTYPE = "multiplex"  # one thread serves every fake worker of this process
    counters = Counters()
    main_daemon = SecureDaemon(settings, host="127.0.0.1", port=0)
    stats_uri = str(main_daemon.register(SimStats(counters), objectId="bench.sim.stats"))
    daemons = []
    workers: list[tuple[str, dict[str, str]]] = []
    for i in range(args.count):
        daemon = SecureDaemon(settings, host="127.0.0.1", port=0)
        name = f"{args.prefix}-{i:04d}"
        address = f"127.0.0.1:{daemon.locationStr.rpartition(':')[2]}"
        control = FakeControl(name, address, counters)
        uris = {
            registry.CONTROL: str(daemon.register(control, objectId=registry.object_name(name, "control"))),
            "compute": str(
                daemon.register(
                    FakeCompute(control, counters), objectId=registry.object_name(name, "compute")
                )
            ),
        }
        main_daemon.combine(daemon)
        daemons.append(daemon)
        workers.append((name, uris))
    ns = registry.connect(settings)
    started = time.perf_counter()
    for name, uris in workers:
        register(ns, name, uris)
    register_s = time.perf_counter() - started
    ns._pyroRelease()
    threading.Thread(
        target=heartbeat_loop, args=(settings, workers, args.heartbeat), name="heartbeat", daemon=True
    ).start()
    loop = threading.Thread(target=main_daemon.requestLoop, name="sim-loop", daemon=True)
    loop.start()
    print(f"ready {register_s:.4f} {stats_uri}", flush=True)
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
