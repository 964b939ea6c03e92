"""The naming scheme in the name server, and plain functions to register and find workers and jobs.

Workers register one object per service under ``pyrocluster.worker.<name>.<service>`` with
metadata ``pyrocluster.service:<service>``, ``pyrocluster.worker:<name>``,
``pyrocluster.tag:<tag>`` (one per tag), ``pyrocluster.slots:<n>`` and
``pyrocluster.protocol:<version>`` (the worker protocol it speaks); the compute object also
carries ``pyrocluster.task:<name>`` for each task it offers and
``pyrocluster.resource:<name>=<amount>`` for each resource it has (SPEC 10). Jobs register under
``pyrocluster.job.<name>`` with ``pyrocluster.service:job``.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import Pyro5.errors

from pyrocluster.auth import make_proxy
from pyrocluster.config import Settings
from pyrocluster.defaults import CONNECT_TIMEOUT_S
from pyrocluster.errors import AuthenticationError, ClusterUnreachable
from pyrocluster.resources import NAME as RESOURCE_NAME

log = logging.getLogger(__name__)

WORKER_PREFIX = "pyrocluster.worker."
JOB_PREFIX = "pyrocluster.job."
META_SERVICE = "pyrocluster.service:"
META_WORKER = "pyrocluster.worker:"
META_TAG = "pyrocluster.tag:"
META_SLOTS = "pyrocluster.slots:"
META_TASK = "pyrocluster.task:"
META_RESOURCE = "pyrocluster.resource:"
META_PROTOCOL = "pyrocluster.protocol:"
PROTOCOL_VERSION = 3
"""The worker protocol (docs/protocol.md) this release speaks; every registration announces it."""
COMPUTE = "compute"
"""The service whose object carries the task catalog."""
CONTROL = "control"
"""Every worker's control object, registered like a service."""


@dataclass(frozen=True)
class WorkerEntry:
    """One worker as the name server lists it."""

    name: str
    uris: Mapping[str, str] = field(default_factory=dict)
    slots: Mapping[str, int] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()
    tasks: frozenset[str] = frozenset()
    """The compute task names it offers (empty without a compute service)."""
    protocol: int = 0
    """The worker protocol version it announced (0: none, a release from before versions)."""
    resources: Mapping[str, float] = field(default_factory=dict)
    """Its compute resources' totals (empty without a compute service)."""

    @property
    def services(self) -> list[str]:
        """The services it offers (not counting control)."""
        return sorted(s for s in self.uris if s != CONTROL)

    @property
    def address(self) -> str:
        """``host:port`` of its daemon."""
        uri = self.uris.get(CONTROL) or next(iter(self.uris.values()), "")
        return uri.rpartition("@")[2]


MAX_NAME_CHARS = 200
"""Longest worker name (it is part of every URI of the worker's objects)."""


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a worker, or None: it goes into Pyro5 URIs
    (``PYRO:<object>@<host:port>``), where whitespace ends the object and ``@`` starts the address."""
    if len(name) > MAX_NAME_CHARS:
        return f"a worker name is at most {MAX_NAME_CHARS} characters"
    bad = next((c for c in name if c.isspace() or c == "@" or not c.isprintable()), None)
    if bad is not None:
        return f"a worker name holds no whitespace, '@' or control characters (it has {bad!r})"
    return None


def object_name(worker: str, service: str) -> str:
    """The registered name of one of a worker's objects."""
    return f"{WORKER_PREFIX}{worker}.{service}"


def job_name(job: str) -> str:
    """The registered name of a running job."""
    return f"{JOB_PREFIX}{job}"


def service_metadata(
    worker: str,
    service: str,
    tags: Iterable[str],
    slots: int,
    tasks: Iterable[str] = (),
    resources: Mapping[str, float] | None = None,
) -> set[str]:
    """Metadata for one registered object of a worker (``tasks`` and ``resources`` only on the
    compute object)."""
    meta = {
        META_SERVICE + service,
        META_WORKER + worker,
        f"{META_SLOTS}{slots}",
        f"{META_PROTOCOL}{PROTOCOL_VERSION}",
    }
    meta.update(META_TAG + t for t in tags)
    meta.update(META_TASK + t for t in tasks)
    meta.update(f"{META_RESOURCE}{name}={amount!r}" for name, amount in (resources or {}).items())
    return meta


@dataclass
class _Object:
    """One registered object, read from its metadata."""

    worker: str
    service: str
    uri: str
    slots: int
    tags: set[str]
    tasks: set[str]
    protocol: int
    resources: dict[str, float]


def _parse_resource(text: str) -> tuple[str, float] | None:
    name, _, amount = text.partition("=")
    try:
        value = float(amount)
    except ValueError:
        return None
    if not RESOURCE_NAME.match(name) or not 0 <= value < float("inf"):
        return None
    return name, value


def _parse_object(value: Any) -> _Object | str | None:
    """One listing value as an object; what is malformed about it; or None when it is not a worker's."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return "not a (uri, metadata) pair"
    uri, metadata = value
    if isinstance(metadata, (str, bytes)) or not isinstance(metadata, Iterable):
        return "metadata is not a set of strings"
    worker = service = None
    slots, protocol, tags, names, resources = 0, 0, set(), set(), {}
    for item in metadata:
        if not isinstance(item, str):
            return f"metadata item {item!r} is not a string"
        if item.startswith(META_WORKER):
            worker = item[len(META_WORKER) :]
        elif item.startswith(META_SERVICE):
            service = item[len(META_SERVICE) :]
        elif item.startswith(META_TAG):
            tags.add(item[len(META_TAG) :])
        elif item.startswith(META_TASK):
            names.add(item[len(META_TASK) :])
        elif item.startswith(META_RESOURCE):
            parsed = _parse_resource(item[len(META_RESOURCE) :])
            if parsed is None:
                return f"{item!r} is not a resource amount"
            resources[parsed[0]] = parsed[1]
        elif item.startswith(META_SLOTS):
            text = item[len(META_SLOTS) :]
            if not (text.isascii() and text.isdigit()) or int(text) > 1_000_000:
                return f"{item!r} is not a slot count"
            slots = int(text)
        elif item.startswith(META_PROTOCOL):
            text = item[len(META_PROTOCOL) :]
            if not (text.isascii() and text.isdigit()) or len(text) > 6:
                return f"{item!r} is not a protocol version"
            protocol = int(text)
    if not worker or not service:
        return None
    return _Object(worker, service, str(uri), slots, tags, names, protocol, resources)


def parse_listing(listing: Mapping[str, Any]) -> list[WorkerEntry]:
    """Group a ``list(prefix=WORKER_PREFIX, return_metadata=True)`` answer into workers.

    A malformed entry (a bad slot count, metadata that is not strings ...) is skipped with a
    warning, so one bad registration never stops discovery of the others.
    """
    uris: dict[str, dict[str, str]] = {}
    slots: dict[str, dict[str, int]] = {}
    tags: dict[str, set[str]] = {}
    catalogs: dict[str, set[str]] = {}
    protocols: dict[str, int] = {}
    totals: dict[str, dict[str, float]] = {}
    for name, value in listing.items():
        obj = _parse_object(value)
        if isinstance(obj, str):
            log.warning("skipping the malformed name-server entry %.200s: %s", name, obj)
            continue
        if obj is None:
            continue
        uris.setdefault(obj.worker, {})[obj.service] = obj.uri
        slots.setdefault(obj.worker, {})[obj.service] = obj.slots
        tags.setdefault(obj.worker, set()).update(obj.tags)
        protocols[obj.worker] = max(protocols.get(obj.worker, 0), obj.protocol)
        if obj.service == COMPUTE:
            catalogs.setdefault(obj.worker, set()).update(obj.tasks)
            totals[obj.worker] = obj.resources
    return [
        WorkerEntry(
            name,
            uris[name],
            slots[name],
            frozenset(tags[name]),
            frozenset(catalogs.get(name, ())),
            protocols[name],
            totals.get(name, {}),
        )
        for name in sorted(uris)
        if CONTROL in uris[name]
    ]


def compatible(entries: Iterable[WorkerEntry]) -> list[WorkerEntry]:
    """The workers that speak this release's protocol: a coordinator sends work to no other."""
    return [entry for entry in entries if entry.protocol == PROTOCOL_VERSION]


def connect(settings: Settings, timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """A proxy to the name server, already connected; ClusterUnreachable when it is not there."""
    proxy = make_proxy(f"PYRO:Pyro.NameServer@{settings.ns_host}:{settings.ns_port}", settings, timeout_s)
    try:
        proxy._pyroBind()
    except Pyro5.errors.SecurityError as exc:
        proxy._pyroRelease()
        raise AuthenticationError(f"name server authentication failed: {exc}") from None
    except Pyro5.errors.CommunicationError as exc:
        proxy._pyroRelease()
        where = settings.ns_address
        if _certificate_refused(exc):  # waiting would not help: the certificates do not match
            raise AuthenticationError(f"TLS with the name server at {where} refused: {exc}") from None
        if settings.tls and _ssl_reason(exc) == "WRONG_VERSION_NUMBER":  # nor would it here
            raise AuthenticationError(
                f"the name server at {where} does not speak TLS: give it --tls-cert, --tls-key "
                "and --tls-ca too, or leave them out here"
            ) from None
        hint = ""
        if not settings.tls_cert and "receiving" in str(exc):  # a TLS server hangs up on a plain hello
            hint = " (if it expects TLS, give --tls-cert, --tls-key and --tls-ca, or PYROCLUSTER_TLS_*)"
        raise ClusterUnreachable(
            f"cannot reach the name server at {settings.ns_address}: {exc}{hint}"
        ) from None
    return proxy


def _certificate_refused(exc: BaseException) -> bool:
    """True when either side of a TLS handshake refused the other's certificate (not a network fault)."""
    reason = _ssl_reason(exc)
    return any(word in reason for word in ("CERTIFICATE", "UNKNOWN_CA"))


def _ssl_reason(exc: BaseException) -> str:
    """The reason (upper case) of the TLS error behind ``exc``; "" when there is none."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return "CERTIFICATE_VERIFY_FAILED"
        if isinstance(seen, ssl.SSLError):
            return str(seen.reason or "").upper()
        seen = seen.__cause__ or seen.__context__
    return ""


def find_workers(ns: Any) -> list[WorkerEntry]:
    """Every worker registered in the name server."""
    return parse_listing(ns.list(prefix=WORKER_PREFIX, return_metadata=True))


def register_worker(
    ns: Any,
    worker: str,
    uris: Mapping[str, str],
    slots: Mapping[str, int],
    tags: Iterable[str],
    tasks: Iterable[str] = (),
    resources: Mapping[str, float] | None = None,
) -> None:
    """(Re-)register every object of a worker; the compute object carries the task catalog and
    the resources' totals."""
    tags, tasks = list(tags), list(tasks)
    for service, uri in uris.items():
        compute = service == COMPUTE
        meta = service_metadata(
            worker,
            service,
            tags,
            slots.get(service, 0),
            tasks if compute else (),
            resources if compute else None,
        )
        ns.register(object_name(worker, service), uri, safe=False, metadata=meta)


def unregister_worker(ns: Any, worker: str) -> None:
    """Remove every object of a worker."""
    ns.remove(prefix=f"{WORKER_PREFIX}{worker}.")


META_COUNTS = "pyrocluster.counts:"
"""Metadata of a running job's registration: its counts (JSON) as it last published them."""
PUBLISHED_COUNTS = ("done", "total", "failed", "cancelled")
"""The counts a running job keeps in its registration, for ``status`` to show should it stop
answering: a job whose token is revoked stops at the first refusal and can no longer remove its
registration or record its end, so ``status`` lists it ``lost`` with these."""


def published_counts(metadata: Any) -> dict[str, int] | None:
    """The counts in a job's registration metadata; None when it has none (or they are malformed)."""
    if isinstance(metadata, (str, bytes)) or not isinstance(metadata, Iterable):
        return None
    for item in metadata:
        if isinstance(item, str) and item.startswith(META_COUNTS):
            try:
                counts = json.loads(item[len(META_COUNTS) :])
            except ValueError:
                return None
            if not isinstance(counts, dict):
                return None
            return {
                k: v
                for k, v in counts.items()
                if k in PUBLISHED_COUNTS and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            }
    return None


def find_announced(ns: Any) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Registered jobs (id -> URI) and the counts each last published (id -> counts), in one listing."""
    uris: dict[str, str] = {}
    published: dict[str, dict[str, int]] = {}
    for name, value in ns.list(prefix=JOB_PREFIX, return_metadata=True).items():
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            continue
        job = name[len(JOB_PREFIX) :]
        uris[job] = str(value[0])
        counts = published_counts(value[1])
        if counts:
            published[job] = counts
    return uris, published


def register_job(ns: Any, job: str, uri: str, metadata: set[str]) -> None:
    """Register a running job's progress object, with ``metadata`` beside its service's."""
    ns.register(job_name(job), uri, safe=False, metadata={META_SERVICE + "job", *metadata})


def unregister_job(ns: Any, job: str) -> None:
    """Remove a job's registration."""
    ns.remove(job_name(job))


def find_jobs(ns: Any) -> dict[str, str]:
    """Registered jobs: name -> URI."""
    listing = ns.list(prefix=JOB_PREFIX)
    return {name[len(JOB_PREFIX) :]: str(uri) for name, uri in listing.items()}
