"""The worker daemon: its services, its registration and heartbeat, and its graceful drain."""

from __future__ import annotations

import errno
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import Pyro5.errors

from pyrocluster import config, protocol, revocations, tasks
from pyrocluster.auth import SecureDaemon, make_proxy
from pyrocluster.config import Settings, local_address_towards
from pyrocluster.defaults import (
    DEFAULT_CRAWL_CONCURRENCY,
    DEFAULT_DRAIN_TIMEOUT_S,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_NS_WAIT_S,
)
from pyrocluster.errors import AuthenticationError, ClusterUnreachable, ConfigError
from pyrocluster.gc_thresholds import fewer_collections
from pyrocluster.nameserver import registry
from pyrocluster.nameserver.server import bound_address
from pyrocluster.resources import CPU, GPU, MEMORY
from pyrocluster.roles import REVOKED
from pyrocluster.services.compute import ComputeService
from pyrocluster.services.control import ControlService
from pyrocluster.services.holders import RegisteredHolders
from pyrocluster.services.state import WorkerState
from pyrocluster.services.values import ValueKeeper, ValuesService
from pyrocluster.services.valuestore import ValueStore
from pyrocluster.slots import make_slots
from pyrocluster.slots.direct import DIRECT_SUFFIX
from pyrocluster.slots.direct_spec import DirectSpec
from pyrocluster.slots.early import EarlySlots, slot_reply_bytes
from pyrocluster.slots.gate import Gate

log = logging.getLogger(__name__)

SERVICES = ("compute", "crawl")
"""Services a worker can offer."""
PROBE_TIMEOUT_S = 2.0
"""Seconds the liveness round trip through our own daemon may take."""
NS_RETRY_FIRST_S = 0.02
NS_RETRY_MAX_S = 0.25
"""Seconds between looks for a name server that is not up yet: short at first (``--local``
starts its workers together with its name server), doubling up to the last."""
REPLY_GRACE_S = 0.3
"""Seconds a draining worker keeps serving after its last call ended, so replies reach the client."""


@dataclass
class WorkerOptions:
    """Everything ``pyrocluster worker`` is told."""

    name: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    services: list[str] = field(default_factory=lambda: list(SERVICES))
    task_modules: list[str] = field(default_factory=list)
    concurrency: int = 0
    pool: str = "process"
    crawl_concurrency: int = DEFAULT_CRAWL_CONCURRENCY
    tags: list[str] = field(default_factory=list)
    resources: dict[str, float] = field(default_factory=dict)
    """Compute resources it offers (``--resources``); cpu and memory default from the machine."""
    gpus: list[str] = field(default_factory=list)
    """GPU device ids (``--gpus``); the ``gpu`` resource is their count."""
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    ns_wait_s: float = DEFAULT_NS_WAIT_S
    insecure: bool = False

    def resolved_name(self) -> str:
        """The name, defaulting to ``<hostname>-<pid>``."""
        return self.name or f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    """One worker process: ``start()`` binds and registers, ``serve()`` runs until stopped."""

    def __init__(self, settings: Settings, options: WorkerOptions) -> None:
        self.settings = settings
        self.options = options
        self.name = options.resolved_name()
        bad = [s for s in options.services if s not in SERVICES]
        if bad or not options.services:
            raise ConfigError(
                f"--services: unknown service {bad[0]!r} (choose from compute, crawl)"
                if bad
                else "--services: name at least one of compute, crawl"
            )
        if "." in self.name or not self.name.strip():
            raise ConfigError(f"--name {self.name!r}: a worker name must be non-empty and contain no '.'")
        self.slots_n = options.concurrency or os.cpu_count() or 1
        self.state = WorkerState(
            self.name, list(options.services), list(options.tags), self.slots_n, options.pool
        )
        self.resources = {
            CPU: float(self.slots_n),
            MEMORY: float(psutil.virtual_memory().total),
            **options.resources,
        }
        if len(set(options.gpus)) != len(options.gpus):
            raise ConfigError(f"--gpus {','.join(options.gpus)}: a device id is given twice")
        if options.gpus:
            self.resources[GPU] = float(len(options.gpus))
        elif GPU in options.resources:
            raise ConfigError("--resources gpu: give the device ids with --gpus instead")
        self.uris: dict[str, str] = {}
        self.instance = secrets.token_hex(4)
        """Ends every object id of this process: a handshake captured on an earlier process under
        the same name names objects this one does not hold, so its replay is refused."""
        self._revocations: revocations.Watcher | None = None
        self._daemon: Any = None
        self._slots: Any = None
        self._crawl: Any = None
        self._values: ValueKeeper | None = None
        self._ns: Any = None
        self.name_taken_by: str | None = None
        self.registered = False
        """True while the last look at the name server found our entries there."""
        self.on_drain: list[Callable[[], None]] = []
        """Called as the drain starts (the systemd ``STOPPING=1``)."""

    # -- start ------------------------------------------------------------------------------

    def start(self) -> None:
        """Load tasks, check the name, bind the daemon and register; raises ConfigError/ClusterUnreachable."""
        early = None
        if "compute" in self.options.services and self.options.pool == "process":
            # Asked for first: the wait for the fork server overlaps what follows (slots/early.py).
            early = EarlySlots(
                self.slots_n, self.options.task_modules, slot_reply_bytes(self.settings), self._direct_spec()
            )
        try:
            self._start(early)
        except BaseException:
            if early is not None and self._slots is None:
                early.discard()
            raise

    def _start(self, early: EarlySlots | None) -> None:
        config.apply(self.settings)
        try:
            config.check_bind(self.options.host, self.settings, self.options.insecure)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        for spec in self.options.task_modules:
            tasks.load_task_module(spec)
        self._ns = self._connect_waiting()
        self._revocations = revocations.watch(self.settings)
        self._claim_name()
        # Bound to every interface, it registers the address it reaches the name server from.
        advertise = local_address_towards(self.settings.ns_host) if self.options.host == "0.0.0.0" else None
        try:
            self._daemon = SecureDaemon(self.settings, self.options.host, self.options.port, advertise)
        except OSError as exc:
            where = f"{self.options.host}:{self.options.port}"
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"cannot listen on {where}: the port is already in use") from None
            raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        self.state.address = bound_address(self._daemon)
        if advertise:
            self.state.address = f"{advertise}:{self.state.address.rpartition(':')[2]}"
        gate = None
        if "compute" in self.options.services:
            if early is not None:
                self._slots = early.result()
            else:
                modules, reply_bytes = self.options.task_modules, slot_reply_bytes(self.settings)
                self._slots = make_slots(self.options.pool, self.slots_n, modules, reply_bytes)
            gate = Gate(self.slots_n, self.resources, self.options.gpus)
            self.state.busy_fn = gate.busy
            self._lend_slots(gate)
            self.state.resources_fn = gate.resources
            self.state.tasks = sorted(tasks.REGISTRY)
            # Big results kept for the calls that receive them: not in the name server, its URI
            # travels in each reference.
            store = ValueStore()
            values = ValuesService(store, self.settings.max_value_bytes)
            values_uri = self._register_object("values", values, listed=False)
            holders = RegisteredHolders(self.settings)
            self._values = ValueKeeper(store, self.settings, self.name, values_uri, holders)
            compute = ComputeService(self.state, self._slots, gate, self.settings, self._values)
            self._register_object("compute", compute)
        if "crawl" in self.options.services:
            from pyrocluster.crawl.service import CrawlService

            self._crawl = CrawlService(self.options.crawl_concurrency, self.state)
            self._register_object("crawl", self._crawl)
        lender = getattr(self._slots, "lender", None)
        on_drain = lender.draining if lender is not None else None
        control = ControlService(self.state, gate.load if gate else None, on_drain)
        self._register_object(registry.CONTROL, control)
        self._register()

    def _direct_spec(self) -> DirectSpec | None:
        """How process slots serve direct calls (``slots/direct.py``); None without them: thread
        slots, the setting off, GPUs (a direct call would not get its empty device list), or a
        bind host the worker refuses (its start fails: no slot port opens meanwhile)."""
        if self.options.pool != "process" or not self.settings.direct or self.options.gpus:
            return None
        try:
            config.check_bind(self.options.host, self.settings, self.options.insecure)
        except ValueError:
            return None
        host = self.options.host
        advertise = local_address_towards(self.settings.ns_host) if host == "0.0.0.0" else None
        object_id = f"{registry.object_name(self.name, 'compute')}.{self.instance}{DIRECT_SUFFIX}"
        return DirectSpec(self.settings, host, advertise, object_id)

    def _lend_slots(self, gate: Gate) -> None:
        """Wire the slots lent to direct calls to the gate, the counters and the revocations."""
        lender = getattr(self._slots, "lender", None)
        if lender is None:
            return
        state = self.state

        def ended(sender: str, task: str, kinds: list[int], elapsed_ms: list[float]) -> None:
            if protocol.NOT_RUN in kinds:  # a batch's calls past its reply go again: not counted
                ran = [pair for pair in zip(kinds, elapsed_ms, strict=False) if pair[0] != protocol.NOT_RUN]
                kinds, elapsed_ms = [kind for kind, _ in ran], [ms for _, ms in ran]
            state.ran([task] * len(kinds), kinds, elapsed_ms, direct=True)
            gate.charge(sender, len(kinds))

        lender.on_ended = ended
        state.busy_fn = lender.in_use
        state.fold_fn = lender.fold
        gate.on_waiting = lender.gate_waiting
        gate.direct = lender.occupancy
        self.on_drain.append(lambda: lender.draining(True))
        REVOKED.listen(lender.publish_revocations)

    def _connect_waiting(self) -> Any:
        """The name server, waiting up to ``ns_wait_s`` for it to appear (saying so once), or
        until the worker is told to stop."""
        deadline = time.monotonic() + self.options.ns_wait_s
        said = False
        pause = NS_RETRY_FIRST_S
        while True:
            try:
                return registry.connect(self.settings)
            except AuthenticationError:
                raise
            except ClusterUnreachable as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    waited = f" (waited {self.options.ns_wait_s:g} s)" if said else ""
                    raise ClusterUnreachable(f"{exc}{waited}") from None
                if not said:
                    log.info(
                        "waiting up to %g s for the name server at %s",
                        self.options.ns_wait_s,
                        self.settings.ns_address,
                    )
                    said = True
                if self.state.stop_event.wait(min(pause, left)):  # a signal: stop waiting now
                    raise ClusterUnreachable(
                        f"stopped while waiting for the name server at {self.settings.ns_address}"
                    ) from None
                pause = min(pause * 2, NS_RETRY_MAX_S)

    def _register_object(self, service: str, obj: Any, listed: bool = True) -> str:
        """Serve ``obj``; a ``listed`` one is registered in the name server too. Its URI."""
        uri = str(
            self._daemon.register(obj, objectId=f"{registry.object_name(self.name, service)}.{self.instance}")
        )
        if listed:
            self.uris[service] = uri
        return uri

    def _slot_counts(self) -> dict[str, int]:
        return {
            "compute": self.slots_n,
            "crawl": self.options.crawl_concurrency,
            registry.CONTROL: self.slots_n,
        }

    def _register(self) -> None:
        registry.register_worker(
            self._ns,
            self.name,
            self.uris,
            self._slot_counts(),
            self.options.tags,
            self.state.tasks,
            self.resources,
        )
        self.registered = True

    # -- health -----------------------------------------------------------------------------

    def probe(self) -> str | None:
        """A real round trip through the daemon: a fresh connection (accept loop, handshake, a
        pool thread) and a ``ping`` of our control object. Raises when the daemon does not answer."""
        proxy = make_proxy(self.uris[registry.CONTROL], self.settings, timeout_s=PROBE_TIMEOUT_S)
        try:
            proxy.ping()
        finally:
            proxy._pyroRelease()
        return None

    def readiness(self) -> str | None:
        """None when the worker takes work (registered, not draining), else why not."""
        if self.state.draining or self.state.stop_event.is_set():
            return "draining"
        if not self.registered:
            return f"not registered with the name server at {self.settings.ns_address}"
        return None

    def _live_holder(self, listing: dict[str, Any]) -> str | None:
        """Address of another live worker registered under our name, or None."""
        control = listing.get(registry.object_name(self.name, registry.CONTROL))
        if control is None or str(control) == self.uris.get(registry.CONTROL):
            return None
        probe = make_proxy(control, self.settings, timeout_s=2.0)
        try:
            probe.ping()
        except Pyro5.errors.PyroError:
            return None  # dead: its registration is stale
        finally:
            probe._pyroRelease()
        return str(control).rpartition("@")[2]

    def _claim_name(self) -> None:
        """Refuse a name a live worker holds; clear a dead worker's stale registration."""
        listing = self._ns.list(prefix=f"{registry.WORKER_PREFIX}{self.name}.")
        holder = self._live_holder(listing)
        if holder is not None:
            raise ConfigError(
                f"--name {self.name}: a live worker with that name is already registered at {holder}"
            )
        if listing:
            registry.unregister_worker(self._ns, self.name)

    # -- run --------------------------------------------------------------------------------

    def serve(self) -> None:
        """Serve until ``state.stop_event`` is set (a signal or a remote drain), then drain and exit.

        ConfigError afterwards when another live worker took our name while we were unreachable.
        """
        loop = threading.Thread(target=self._daemon.requestLoop, name="pyro-request-loop", daemon=True)
        stop = self.state.stop_event
        with fewer_collections():  # batches of thousands of acyclic calls: see gc_thresholds
            loop.start()
            while not stop.wait(self.options.heartbeat_s):
                self.heartbeat()
            self.drain()
        self._daemon.shutdown()
        loop.join(timeout=5)
        self._close()
        if self.name_taken_by:
            raise ConfigError(
                f"--name {self.name}: taken over by another live worker at {self.name_taken_by}"
            )

    def heartbeat(self) -> None:
        """Re-register when the name server lost our entries (e.g. it restarted)."""
        try:
            if self._ns is None:
                self._ns = registry.connect(self.settings)
            listing = self._ns.list(prefix=f"{registry.WORKER_PREFIX}{self.name}.")
            if {str(v) for v in listing.values()} != set(self.uris.values()):
                holder = self._live_holder(listing)
                if holder is not None:
                    # Overwriting a live worker's entries would make the two flip-flop for ever.
                    log.error("another live worker at %s took the name %s: stopping", holder, self.name)
                    self.name_taken_by = holder
                    self.state.stop_event.set()
                    return
                self.registered = False
                self._register()
                log.info("re-registered with the name server at %s", self.settings.ns_address)
            self.registered = True
        except Pyro5.errors.PyroError as exc:
            log.warning("name server at %s unreachable: %s", self.settings.ns_address, exc)
            self.registered = False
            self._drop_ns()
        except Exception as exc:  # ClusterUnreachable and friends: try again next beat
            log.warning("heartbeat failed: %s", exc)
            self.registered = False
            self._drop_ns()

    def drain(self) -> None:
        """Stop taking work, wait for what is held (up to the drain timeout), unregister."""
        self.state.draining = True
        for hook in self.on_drain:
            hook()
        log.info(
            "draining: finishing %d held batch(es) (up to %g s), taking no new work",
            self.state.active_calls,
            self.options.drain_timeout_s,
        )
        deadline = time.monotonic() + self.options.drain_timeout_s
        lender = getattr(self._slots, "lender", None)
        waited = False
        while (self.state.active_calls > 0 or (lender is not None and lender.running() > 0)) and (
            time.monotonic() < deadline
        ):
            waited = True
            time.sleep(0.05)
        if self.state.active_calls > 0:
            log.info("drain timed out with %d batch(es) still running", self.state.active_calls)
        # The last replies go out for a moment after their calls end: none to wait for when the
        # last call ended a grace ago (an idle worker stops at once).
        last = time.monotonic() if waited else self.state.left_at
        time.sleep(max(0.0, last + REPLY_GRACE_S - time.monotonic()))
        if self.name_taken_by:
            return  # the entries are the other worker's now
        try:
            if self._ns is None:
                self._ns = registry.connect(self.settings, timeout_s=2.0)
            registry.unregister_worker(self._ns, self.name)
        except Exception as exc:  # an unreachable name server must not keep us alive
            log.warning("could not unregister: %s", exc)

    def _drop_ns(self) -> None:
        if self._ns is not None:
            self._ns._pyroRelease()
            self._ns = None

    def _close(self) -> None:
        if self._revocations is not None:
            self._revocations.stop()
        self._drop_ns()
        if self._slots is not None:
            self._slots.close()
        if self._values is not None:
            self._values.close()
        if self._crawl is not None and hasattr(self._crawl, "close"):
            self._crawl.close()
        self._daemon.close()
