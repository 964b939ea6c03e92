"""A running job's small Pyro object in the name server, so that ``status`` can show its progress."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import Pyro5.api

from pyrocluster import revocations
from pyrocluster.auth import SecureDaemon, make_proxy, own_peer
from pyrocluster.config import Settings, is_loopback, local_address_towards
from pyrocluster.errors import AuthenticationError, ConfigError, RoleRefused
from pyrocluster.nameserver import finished, registry
from pyrocluster.roles import REVOKED, SECRET_PEER, Peer, audit, check, refusal, require_own, requires
from pyrocluster.tokens import Role

log = logging.getLogger(__name__)

RENEW_INTERVAL_S = 2.0
"""Seconds between checks that a running job is still registered."""
CANCEL_TIMEOUT_S = 5.0
"""Seconds a job has to acknowledge ``cancel``."""


@Pyro5.api.expose
class JobProgress:
    """Answers ``progress()`` with the job's counters and ``failures()`` with its last failures."""

    def __init__(
        self,
        job_id: str,
        snapshot: Callable[[], dict[str, Any]],
        failures: Callable[[], list[dict[str, Any]]] | None = None,
        on_cancel: Callable[[], None] | None = None,
        owner: Peer = SECRET_PEER,
    ) -> None:
        self._id = job_id
        self._snapshot = snapshot
        self._failures = failures
        self._on_cancel = on_cancel
        self._owner = owner
        """Who submitted the job: a submitter may cancel only its own jobs."""

    def cancel(self) -> bool:
        """Stop the job (``pyrocluster cancel``): it dispatches nothing more, stops its running tasks
        and records the unfinished ones ``cancelled``. True when the job takes the request.

        An operator (or the secret) may cancel any job; a submitter only the jobs submitted under
        its own token's name.
        """
        peer = check(Role.SUBMITTER, "cancel jobs")
        if peer.role < Role.OPERATOR and (not self._owner.is_token or peer.name != self._owner.name):
            log.warning("refused: %s may not cancel %s's job %s", peer.describe(), self._owner.name, self._id)
            raise PermissionError(refusal(peer, Role.OPERATOR, "cancel another's job"))
        if self._on_cancel is None:
            return False
        audit(peer, "cancel", job=self._id)
        self._on_cancel()
        return True

    @requires(Role.VIEWER, "read job progress")
    def progress(self) -> dict[str, Any]:
        """The job's counters now: its ``status`` entry."""
        return status_entry(self._id, self._snapshot(), "running")

    @requires(Role.VIEWER, "read job failures")
    def failures(self) -> list[dict[str, Any]]:
        """The last failed tasks: id, call, worker, attempts, type, message, traceback."""
        return self._failures() if self._failures else []


ENTRY_KEYS = (
    "name", "done", "total", "failed", "rate", "ok", "skipped", "cancelled", "retried", "in_flight",
    "waiting", "eta_s", "priority", "calls_waiting", "graph",
)  # fmt: skip


def status_entry(job_id: str, snap: dict[str, Any], state: str) -> dict[str, Any]:
    """A job as ``status`` lists it, from a runner snapshot."""
    entry = {k: snap[k] for k in ENTRY_KEYS if k in snap}
    entry.update(state=state, id=job_id, failures_seen=snap.get("failures_seen", snap.get("failed", 0)))
    return entry


def counts_metadata(snap: dict[str, Any]) -> set[str]:
    """A running job's registration metadata: its service and its counts now (``PUBLISHED_COUNTS``)."""
    counts = {k: int(snap.get(k, 0)) for k in registry.PUBLISHED_COUNTS}
    return {registry.META_SERVICE + "job", registry.META_COUNTS + json.dumps(counts, separators=(",", ":"))}


def started_at(job_id: str) -> str:
    """When a job started, from its id (``name@host-pid-<epoch ms>``), as UTC text; "" if unknown."""
    stamp = job_id.rpartition("-")[2]
    if not stamp.isdigit():
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(stamp) / 1000))


def jobs_to_cancel(running: Iterable[str], job: str, every: bool) -> list[str]:
    """The running jobs ``job`` names: its id, or its name when one job has it (all with ``every``).

    ConfigError when a name is shared and ``every`` is not set, listing the ids and start times.
    """
    running = list(running)
    if job in running:
        return [job]
    named = sorted(r for r in running if r.partition("@")[0] == job)
    if len(named) > 1 and not every:
        listed = ", ".join(f"{r} (started {started_at(r)})" for r in named)
        raise ConfigError(
            f"{len(named)} running jobs are named {job!r}; cancel one by its id, or all of them with "
            f"--all: {listed}"
        )
    return named


def cancel_job(settings: Settings, job: str, every: bool = False) -> list[str]:
    """Ask the running job ``job`` (an id, or a name as :func:`jobs_to_cancel` says) to stop.

    Returns the ids that acknowledged. ClusterUnreachable when the name server cannot be reached;
    RoleRefused beyond the role.
    """
    require_own(own_peer(settings), Role.SUBMITTER, "cancel jobs")
    ns = registry.connect(settings)
    try:
        jobs = registry.find_jobs(ns)
    finally:
        ns._pyroRelease()
    acknowledged = []
    for registered in jobs_to_cancel(jobs, job, every):
        proxy = make_proxy(jobs[registered], settings, timeout_s=CANCEL_TIMEOUT_S)
        try:
            if proxy.cancel():
                acknowledged.append(registered)
        except (RoleRefused, AuthenticationError):
            raise
        except Exception as exc:  # a job that died without unregistering is not running
            log.debug("cancel of %s failed: %s", registered, exc)
        finally:
            proxy._pyroRelease()
    return acknowledged


class Announcement:
    """Registers a job while it runs (again after a name-server restart); failures are logged, never fatal."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        snapshot: Callable[[], dict[str, Any]],
        failures: Callable[[], list[dict[str, Any]]] | None = None,
        on_cancel: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._on_cancel = on_cancel
        self._registered_as = f"{name}@{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000)}"
        self._snapshot = snapshot
        self._failures = failures
        self._final: dict[str, Any] | None = None
        self._published: set[str] = set()
        """The registration metadata last published (its counts then)."""
        self._daemon: Any = None
        self._uri = ""
        self._stop = threading.Event()
        self._announcing = threading.Thread(target=self._announce, name="job-announce", daemon=True)
        self._serving: threading.Thread | None = None

    def __enter__(self) -> Announcement:
        # The listener (a Pyro5 daemon: its socket and thread pool) is made on the announcing
        # thread, off the job's way; the job is registered there once it listens, as before.
        self._announcing.start()
        return self

    def _announce(self) -> None:
        """Listen for ``status`` and ``cancel``, then keep the job registered until it leaves."""
        try:
            host = local_address_towards(self._settings.ns_host)
            if not is_loopback(host) and not self._settings.authenticated:
                log.warning("not announcing the job: no cluster secret to protect a non-loopback listener")
                return
            daemon = SecureDaemon(self._settings, host=host, port=0)
            self._uri = str(
                daemon.register(
                    JobProgress(
                        self._registered_as,
                        self._snapshot,
                        self._failures,
                        self._on_cancel,
                        own_peer(self._settings),
                    )
                )
            )
        except Exception as exc:  # status is a convenience: the job runs without it
            log.warning("could not announce the job: %s", exc)
            return
        self._daemon = daemon
        self._serving = threading.Thread(target=daemon.requestLoop, name="job-announce-loop", daemon=True)
        self._serving.start()
        self._keep_registered()

    def _keep_registered(self) -> None:
        """Register now, and again whenever the name server lost the entry (it restarted); keep the
        counts in its metadata up to date (published when they changed, each round)."""
        ns: Any = None
        name = registry.job_name(self._registered_as)
        while True:
            try:
                if ns is None:
                    ns = registry.connect(self._settings, timeout_s=2.0)
                meta = counts_metadata(self._snapshot())
                if registry.find_jobs(ns).get(self._registered_as) != self._uri:
                    registry.register_job(ns, self._registered_as, self._uri, meta)
                    self._published = meta
                elif meta != self._published:
                    ns.set_metadata(name, meta)
                    self._published = meta
                if self._settings.authenticated:  # the job's cancel checks tokens: keep up with revocations
                    REVOKED.update(revocations.read_revocations(ns))
            except Exception as exc:  # name server away: try again on the next round
                log.debug("job registration failed: %s", exc)
                if ns is not None:
                    ns._pyroRelease()
                    ns = None
            if self._stop.wait(RENEW_INTERVAL_S):
                break
        try:
            if ns is None:
                ns = registry.connect(self._settings, timeout_s=2.0)
            registry.unregister_job(ns, self._registered_as)
            if self._final is not None:
                failures = self._failures() if self._failures else []
                finished.register_finished(ns, self._registered_as, self._final, failures)
        except Exception as exc:  # the name server may be gone; the entry then dies with it
            log.warning("could not remove the job from the name server: %s", exc)
        finally:
            if ns is not None:
                ns._pyroRelease()

    def finish(self, snapshot: dict[str, Any], cancelled: bool = False) -> None:
        """Leave the job listed as finished (or cancelled), with this final snapshot, once it ends."""
        self._final = status_entry(self._registered_as, snapshot, "cancelled" if cancelled else "finished")

    def leave(self) -> None:
        """Start taking the job off the name server (listed as finished when ``finish`` was
        called); the exit waits for it."""
        self._stop.set()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._announcing.join(timeout=5)  # unregistered: status no longer asks the daemon
        if self._daemon is None:
            return
        # Pyro5's shutdown sleeps a little; the job's result need not wait for it.
        threading.Thread(target=self._close_daemon, name="job-announce-close", daemon=True).start()

    def _close_daemon(self) -> None:
        self._daemon.shutdown()
        if self._serving is not None:
            self._serving.join(timeout=5)
        self._daemon.close()
