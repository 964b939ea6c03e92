"""The ``Cluster`` facade: submit, map, fetch, status, and ``Cluster.local``."""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from itertools import islice, repeat
from typing import TYPE_CHECKING, Any

from pyrocluster import codec, config
from pyrocluster.auth import own_peer
from pyrocluster.config import Settings
from pyrocluster.coordinator.balancer import MAX_BATCH
from pyrocluster.coordinator.calloptions import CallOptions, retry_count, timeout_s
from pyrocluster.coordinator.calls import Call, CallGroup, TaskFuture, Waiter
from pyrocluster.coordinator.dispatch import Dispatcher
from pyrocluster.coordinator.fanout import KeptChannels
from pyrocluster.coordinator.futureargs import submit_after, upstream_futures
from pyrocluster.coordinator.keptresults import KeptResults
from pyrocluster.coordinator.links import AHEAD_CHANNELS, AHEAD_WORKERS
from pyrocluster.coordinator.status import cluster_status
from pyrocluster.defaults import (
    DEFAULT_PROBE_TIMEOUT_S,
    DEFAULT_RETRIES,
    DEFAULT_TASK_TIMEOUT_S,
    DEFAULT_WAIT_S,
)
from pyrocluster.gc_thresholds import fewer_collections
from pyrocluster.roles import require_own
from pyrocluster.tokens import Role

if TYPE_CHECKING:
    from pyrocluster.local import LocalCluster

MAP_WINDOW = 16384
"""Calls of a ``map`` in flight or queued at once: bounds memory for endless iterables."""
MAP_CHUNK = 1024
"""Most calls of a ``map`` whose results are awaited together."""
_ERROR, _VALUE = operator.attrgetter("error"), operator.attrgetter("value")


def task_name(name: Any) -> str:
    """``name`` when it is a task name; a TypeError that says how tasks are called otherwise."""
    if isinstance(name, str):
        return name
    if callable(name):
        called = getattr(name, "__name__", None) or repr(name)
        raise TypeError(
            f"tasks are called by name, not passed as functions: submit({called!r}, ...) runs the "
            "function registered with @pyrocluster.task on the workers (start them with --tasks "
            "MODULE_OR_FILE)"
        )
    raise TypeError(f"a task name must be a string, not {type(name).__name__}")


class Calls:
    """A view of a cluster with fixed call options: ``submit``, ``map`` and ``starmap``.

    Options never travel as keyword arguments, so a task may itself take ``tags``, ``timeout``
    or ``priority``.
    """

    def __init__(self, cluster: Cluster, options: CallOptions) -> None:
        self._cluster = cluster
        self._options = options

    def options(
        self,
        *,
        tags: Iterable[str] | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        priority: int | None = None,
        retry_on_error: bool | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> Calls:
        """A view with some options changed (TypeError or ValueError naming a malformed one)."""
        changed = self._options.changed(tags, timeout, retries, priority, retry_on_error, resources)
        return Calls(self._cluster, changed)

    def _settings(self) -> tuple[frozenset[str], float, int, bool, int]:
        """Tags, timeout, retries, retry_on_error and priority of the calls this view makes."""
        o, c = self._options, self._cluster
        return (
            o.tags,
            float(o.timeout or c.timeout),
            c.retries if o.retries is None else o.retries,
            o.retry_on_error,
            o.priority,
        )

    def _call(self, name: str, args: list[Any], kwargs: dict[str, Any], waiter: Waiter | None = None) -> Call:
        tags, timeout_s, retries, on_error, priority = self._settings()
        return Call(
            "compute", name, args, kwargs, tags, timeout_s, retries, on_error, waiter, None, priority,
            self._options.resources,
        )  # fmt: skip

    def submit(self, name: str, /, *args: Any, **kwargs: Any) -> TaskFuture:
        """Run compute task ``name(*args, **kwargs)`` somewhere; returns a future of its result.

        A future of an earlier call passed as an argument (top level of ``args`` or a ``kwargs``
        value) makes this call wait for it, without a thread, and receive its result.
        """
        call = self._call(task_name(name), list(args), kwargs)
        call.keep = True  # a big result stays on its worker until asked for or passed on
        future = call.future
        future.kept = self._cluster.kept
        upstreams = upstream_futures(call.args, call.kwargs)
        if upstreams:
            submit_after(call, upstreams, self._cluster.submit_calls)
        else:
            self._cluster.submit_calls((call,))
        return future

    def map(self, name: str, /, *iterables: Iterable[Any]) -> Iterator[Any]:
        """``name(item)`` per item (several iterables are zipped, as ``Executor.map``), results in order."""
        task_name(name)
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        items = zip(*iterables, strict=False) if len(iterables) > 1 else ((x,) for x in iterables[0])
        return self.starmap(name, items)

    def starmap(self, name: str, /, iterable: Iterable[Iterable[Any]]) -> Iterator[Any]:
        """``name(*item)`` per item, yielding results in input order as they are ready.

        At most ``MAP_WINDOW`` calls are queued at once, so a huge or endless iterable runs in
        bounded memory. A failed call raises (TaskFailed, TaskTimeout or WorkerUnavailable) when reached.
        Left early (closed, or a failed call raised), its calls no worker has taken never run.
        While it runs, the process's cycle collector runs less often (``gc_thresholds``).
        """
        return self._starmap(task_name(name), iter(iterable))

    def _starmap(self, name: str, source: Iterator[Iterable[Any]]) -> Iterator[Any]:
        no_kwargs: dict[str, Any] = {}
        chunks: deque[tuple[CallGroup, list[Call]]] = deque()
        queued = 0
        chunk_size = 1  # doubled per chunk: the first results stream at once, later chunks are cheap
        submit = self._cluster.submit_calls
        tags, timeout_s, retries, on_error, priority = self._settings()  # once, not per item
        ask = self._options.resources

        def refill() -> None:
            nonlocal queued, chunk_size
            while queued < MAP_WINDOW:
                args = list(map(list, islice(source, chunk_size)))
                if not args:
                    return
                group = CallGroup(len(args))
                payloads = codec.pack_positional(args) or repeat(b"")  # none: the dispatcher packs them
                # one C-level map over the arguments, no Python frame per call but the Call's own
                calls = list(
                    map(Call, repeat("compute"), repeat(name), args, repeat(no_kwargs), repeat(tags),
                        repeat(timeout_s), repeat(retries), repeat(on_error), repeat(group), repeat(None),
                        repeat(priority), repeat(ask), payloads)
                )  # fmt: skip
                chunks.append((group, calls))
                queued += len(calls)
                chunk_size = min(MAP_CHUNK, chunk_size * 2)
                submit(calls)

        try:
            with fewer_collections():  # thousands of acyclic calls alive: see gc_thresholds
                refill()
                while chunks:
                    group, calls = chunks.popleft()
                    group.wait()
                    queued -= len(calls)
                    refill()
                    if not any(map(_ERROR, calls)):  # the common chunk: every value, no check per call
                        yield from map(_VALUE, calls)
                        continue
                    for call in calls:
                        if call.error is not None:
                            raise call.error
                        yield call.value
        finally:  # closed early or raised: the calls no worker has taken never run (as Executor.map)
            if chunks:
                self._cluster.withdraw([call for _, calls in chunks for call in calls])


class Cluster:
    """A coordinator: discovers workers through the name server and spreads calls over them.

    ``timeout`` is per attempt (seconds), ``retries`` the further attempts after a worker failure,
    ``probe_timeout`` the liveness-probe silence that counts as death, ``wait`` how long a call
    waits for any live worker offering its service, ``max_batch`` the most calls sent to a worker
    in one request (1 turns batching off), ``max_value_bytes`` the largest encoded arguments of
    one call (default 1 GiB; a worker's own cap bounds its results), ``direct`` whether a lone
    call goes straight to a worker's slot process when the worker lends one (default on, or
    ``PYROCLUSTER_DIRECT``).
    """

    def __init__(
        self,
        ns: str | None = None,
        *,
        secret: str | bytes | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TASK_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        probe_timeout: float = DEFAULT_PROBE_TIMEOUT_S,
        wait: float = DEFAULT_WAIT_S,
        max_batch: int = MAX_BATCH,
        max_value_bytes: int | None = None,
        settings: Settings | None = None,
        direct: bool | None = None,
    ) -> None:
        # checked before anything starts: a probe_timeout of 0 or NaN would set every worker aside
        probe_timeout = timeout_s(probe_timeout, "probe_timeout")
        wait = timeout_s(wait, "wait", zero=True)
        max_batch = retry_count(max_batch, "max_batch")
        if settings is None:
            settings = Settings.from_sources(
                ns=ns, secret=secret, token=token, max_value_bytes=max_value_bytes
            )
        else:
            settings = settings.with_ns(ns) if ns else settings
            if max_value_bytes is not None:
                settings = replace(settings, max_value_bytes=config.check_value_cap(max_value_bytes))
        if direct is not None:
            settings = replace(settings, direct=direct)
        config.apply(settings)
        self.settings = settings
        self.peer = own_peer(settings)
        """Who this coordinator is to the workers (the secret, or its token's name and role)."""
        self.timeout = timeout_s(timeout)
        self.retries = retry_count(retries)
        self._local: LocalCluster | None = None
        self._dispatcher = Dispatcher(settings, probe_timeout, wait, max(1, max_batch))
        self.kept = KeptResults(self)
        """The big results of ``submit`` calls kept on the workers."""
        self._status_channels = KeptChannels()
        """Connections of ``status()`` to the workers, kept between calls."""
        self._dispatcher.start()
        unreachable = self._dispatcher.unreachable()
        if unreachable is not None:  # fail fast with the cause, not after ``wait`` per call
            self._dispatcher.close()
            raise unreachable
        self._calls = Calls(self, CallOptions())

    @classmethod
    def local(cls, workers: int = 2, worker_args: list[str] | None = None, **kwargs: Any) -> Cluster:
        """Start a private name server and ``workers`` workers on loopback; ``close()`` stops them."""
        from pyrocluster.local import LocalCluster  # process management, loaded only for a local cluster

        settings = kwargs.pop("settings", None) or Settings.from_sources(secret=kwargs.pop("secret", None))
        cap = kwargs.pop("max_value_bytes", None)
        if cap is not None:  # the local workers take the same cap
            settings = replace(settings, max_value_bytes=config.check_value_cap(cap))
        local = LocalCluster(workers, worker_args, env=settings.child_env())
        try:
            cluster = cls(settings=settings.with_ns(local.address), **kwargs)
        except BaseException:
            local.close()
            raise
        cluster._local = local
        return cluster

    @property
    def address(self) -> str:
        """The name server's ``HOST:PORT``."""
        return self.settings.ns_address

    @property
    def local_cluster(self) -> LocalCluster | None:
        """The processes started by ``Cluster.local``, if any."""
        return self._local

    # -- calls -------------------------------------------------------------------------------

    def make_call(
        self,
        service: str,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        *,
        tags: Iterable[str] = (),
        timeout: float | None = None,
        retries: int | None = None,
        retry_on_error: bool = False,
        waiter: Waiter | None = None,
        tag: Any = None,
        priority: int = 0,
    ) -> Call:
        """A call not yet submitted (see :meth:`submit_calls`); without ``waiter``, ``call.future`` tells."""
        return Call(
            service,
            name,
            args,
            kwargs,
            frozenset(tags),
            float(timeout or self.timeout),
            self.retries if retries is None else retries,
            retry_on_error,
            waiter,
            tag,
            priority,
        )

    def submit_calls(self, calls: Iterable[Call]) -> None:
        """Queue prepared calls; their futures are ``call.future``. RoleRefused for a viewer."""
        require_own(self.peer, Role.SUBMITTER, "submit tasks")
        self._dispatcher.submit(calls)

    def options(
        self,
        *,
        tags: Iterable[str] | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        priority: int | None = None,
        retry_on_error: bool | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> Calls:
        """A view whose ``submit``/``map``/``starmap`` use these options, e.g. ``options(priority=5)``
        or ``options(resources={"gpu": 1, "memory": "4GiB"})``."""
        return self._calls.options(
            tags=tags,
            timeout=timeout,
            retries=retries,
            priority=priority,
            retry_on_error=retry_on_error,
            resources=resources,
        )

    def submit(self, name: str, /, *args: Any, **kwargs: Any) -> TaskFuture:
        """Run compute task ``name(*args, **kwargs)`` somewhere; returns a future of its result.

        Every keyword argument goes to the task; call options are set with :meth:`options`.
        """
        return self._calls.submit(name, *args, **kwargs)

    def map(self, name: str, /, *iterables: Iterable[Any]) -> Iterator[Any]:
        """``name(item)`` per item, as ``Executor.map`` (several iterables are zipped); results in order."""
        return self._calls.map(name, *iterables)

    def starmap(self, name: str, /, iterable: Iterable[Iterable[Any]]) -> Iterator[Any]:
        """``name(*item)`` per item, as ``Pool.starmap``; results stream in input order."""
        return self._calls.starmap(name, iterable)

    def fetch(
        self, url: str, *, timeout: float | None = None, tags: Iterable[str] = (), **options: Any
    ) -> Any:
        """Fetch one page through a worker's crawl service and return its record."""
        opts = dict(options)
        if timeout is not None:
            opts.setdefault("timeout", timeout)
        call = self.make_call("crawl", "fetch", [url], opts, tags=tags, timeout=opts.get("timeout", 30.0))
        self.submit_calls((call,))
        return call.future.result()

    def crawl(self, seeds: Iterable[str] | str, **options: Any) -> Iterator[dict[str, Any]]:
        """Crawl from ``seeds``, yielding page records (ok, failed or skipped) as they arrive.

        Options: ``allow``, ``max_pages``, ``max_depth``, ``per_host_rate``, ``robots``, ``extract``,
        ``max_bytes``, ``timeout``, ``user_agent``, ``retries``, ``tags``, and for incremental
        crawls ``state`` (a SQLite file), ``revisit``, ``sitemaps``, ``headers``, ``cookies``
        (values, not ``{env: NAME}``): docs/crawling.md. Closing the generator stops the crawl.
        """
        import queue
        import threading

        from pyrocluster.crawl.optiontypes import check_types
        from pyrocluster.crawl.run import CrawlRun

        check_types(options)
        run = CrawlRun(self, [seeds] if isinstance(seeds, str) else list(seeds), **options)
        records: queue.SimpleQueue[Any] = queue.SimpleQueue()
        stop = threading.Event()
        done = object()

        def body() -> None:
            try:
                run.run(records.put, stop)
            except BaseException as exc:  # handed to the consumer, raised there
                records.put(exc)
            records.put(done)

        thread = threading.Thread(target=body, name="crawl", daemon=True)
        thread.start()
        try:
            while (item := records.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join(timeout=5)

    def cancel(self, future: TaskFuture) -> bool:
        """Stop a call, waiting or running: a process-slot task is killed (its slot process replaced),
        a thread-slot task abandoned. True when it was cancelled (its future raises ``CancelledError``),
        False when it had already ended."""
        if not isinstance(future, TaskFuture):
            raise TypeError(f"cancel takes a future returned by submit, not {type(future).__name__}")
        # the dispatcher that sent the call stops it, whichever Cluster object is asked
        canceller = future.canceller or self._dispatcher.cancel
        return bool(canceller([future.call], True))

    def withdraw(self, calls: list[Call]) -> None:
        """Cancel those of ``calls`` still waiting here; the ones a worker has taken run on."""
        self._dispatcher.cancel(calls, running=False)

    def cancel_calls(self, waiter: Waiter) -> list[Call]:
        """Cancel every unsettled call of ``waiter`` (a job), waiting or running; return them."""
        return self._dispatcher.cancel(self._dispatcher.calls_of(waiter), running=True)

    @property
    def sender_id(self) -> str:
        """How this coordinator names itself to workers (the owner of the values they keep for it)."""
        return self._dispatcher.sender_id

    @property
    def retried(self) -> int:
        """Calls re-queued after a failed attempt so far."""
        return self._dispatcher.retried

    def open_channels(self, service: str = "compute") -> None:
        """Connect to the workers found so far now, in the background, rather than at the first
        batches (``submit`` does it while it loads the job file); never blocks."""
        self._dispatcher.open_channels(service, AHEAD_CHANNELS, AHEAD_WORKERS)

    def waiting_by_service(self) -> dict[str, int]:
        """Calls this coordinator holds that no worker has taken yet, per service."""
        return self._dispatcher.waiting_by_service()

    def capacity(self, service: str) -> int:
        """Slots for ``service`` over the live workers known now."""
        return self._dispatcher.capacity(service)

    def in_flight(self) -> int:
        """Calls currently on workers."""
        return self._dispatcher.in_flight()

    def status(self) -> dict[str, Any]:
        """The name server, the workers and the running jobs, as ``status --json`` prints them."""
        return cluster_status(self.settings, self._dispatcher.wire(), self._status_channels)

    # -- lifetime ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._dispatcher.closed

    def close(self) -> None:
        """Stop dispatching (unsettled calls fail; cancels already asked still reach their workers,
        waited for up to 2 s) and stop the local cluster if we started one."""
        self.kept.free()
        self._dispatcher.close()
        with self._status_channels.turn:
            self._status_channels.close()
        if self._local is not None:
            self._local.close()
            self._local = None

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
