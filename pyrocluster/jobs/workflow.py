"""A job's tasks as a workflow: what to hand out next, what to record as skipped, which callbacks fire.

The runner iterates :meth:`Workflow.chunks` for the calls to submit and reports every record it
wrote to :meth:`Workflow.recorded`, which returns the records that follow from them (skipped
downstream tasks). Dependents and callbacks are handed out only after their upstream's record
was written; waiting tasks cost memory, never a thread.
"""

from __future__ import annotations

import itertools
import operator
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from pyrocluster.jobs.graph import Flow, Node, Step, build_graph, callback_id, should_fire, unit_ids
from pyrocluster.jobs.graphview import graph_view
from pyrocluster.jobs.items import TaskItem, callbacks_of, count_task_items, item_chunks, items_of
from pyrocluster.jobs.recordjson import OPTIONS, default
from pyrocluster.jobs.results import encode_record
from pyrocluster.jobs.spec import CallbackSpec, JobSpec

Write = Callable[[list[dict[str, Any]]], None]
KEPT_CHUNK = 1024
"""Kept (``--resume``) outcomes fed back to the graph together."""
_ID, _STATUS = operator.itemgetter("id"), operator.itemgetter("status")


def _never(loc: Any, message: str) -> Exception:  # pragma: no cover - load_job validated the graph
    return AssertionError(f"{loc}: {message}")


def same_call(record: dict[str, Any], item: TaskItem, spelled: dict[int, Any] | None = None) -> bool:
    """Whether a kept record was made by this very call: the same task with the same arguments.

    Compared as the results file writes them, so an unchanged call matches its own record whatever
    JSON did to its values (tuples, int keys); a job file edited under the same name runs again.
    ``spelled`` maps the ``id()`` of a value read back from its ``.values/`` file to the file
    reference its record holds: a big argument was written as that reference.
    """
    written = encode_record(
        {"call": record.get("call"), "args": record.get("args"), "kwargs": record.get("kwargs")}
    )
    mine = {"call": item.call, "args": item.args, "kwargs": item.kwargs}
    if spelled:
        try:
            return written == orjson.dumps(
                mine, default=lambda v: spelled.get(id(v)) or default(v), option=OPTIONS
            )
        except TypeError:
            return False
    return written == encode_record(mine)


def callback_item(
    callback_id_: str, callback: CallbackSpec, record: dict[str, Any], like: TaskItem
) -> TaskItem:
    """The call of a callback: its args with ``record`` appended; tags and limits as ``like``; it
    asks the default resources (a short call after the outcome, not another run of the task)."""
    return like._replace(
        id=callback_id_,
        call=callback.call,
        args=[*callback.args, record],
        kwargs=callback.kwargs,
        retry_on_error=False,
        kind="callback",
        resources=(),
    )


class Workflow:
    """One run of a job's compute tasks through its dependency graph (thread-safe)."""

    def __init__(
        self,
        spec: JobSpec,
        kept: dict[str, dict[str, Any]],
        write: Write,
        forget: Callable[[str], None] = lambda key: None,
        spelled: dict[int, Any] | None = None,
    ) -> None:
        self.spec = spec
        self._write = write
        """Writes (and counts) records decided without a fresh outcome (from kept ones)."""
        self._forget = forget
        """Drops a stale line from the results file (at compaction)."""
        self.kept = kept
        self._spelled = spelled
        """``id()`` of a kept value read from its file -> its file reference (see ``same_call``)."""
        self.total = count_task_items(spec)
        """Records the job will have: grows as dynamic maps expand and callbacks fire."""
        self.resumed = 0
        """Kept ``ok`` records taken as this run's outcomes (tasks and callbacks)."""
        self._cond = threading.Condition()
        self._ready: deque[Node] = deque()
        self._callbacks: deque[TaskItem] = deque()
        self._like: dict[str, TaskItem] = {}
        graph = build_graph(spec.tasks, _never)
        self._handlers = {
            node.id: callbacks_of(spec.tasks[node.index], spec.defaults) for node in graph.nodes.values()
        }
        with_callbacks = {key for key, pair in self._handlers.items() if pair != (None, None)}
        self.flow = Flow(graph, followed=with_callbacks)
        self._any_callback = bool(with_callbacks)
        self._tracking = self._any_callback or graph.has_edges
        self._cancelled = False
        self._pending_records: list[dict[str, Any]] = []
        self.counts: dict[str, Counter[str]] = {}
        """Outcomes per task id (a map's items count under the map), for the dashboard's graph."""
        with self._cond:
            self._apply(self.flow.start())

    def map_sources(self) -> frozenset[str]:
        """The tasks whose result a dynamic map expands (the coordinator needs those values)."""
        return frozenset(n.map_source for n in self.flow.graph.nodes.values() if n.map_source)

    def released(self, key: str) -> bool:
        """Whether the value of task ``key`` (a single call) was handed to every task that
        receives it: no call made from now on will hold it."""
        with self._cond:
            return key in self.flow.graph.needed and key not in self.flow.values and not self._any_callback

    @property
    def waiting(self) -> int:
        """Calls waiting for their dependencies."""
        return self.flow.waiting_units

    def chunks(self, stop: threading.Event) -> Iterator[list[TaskItem] | None]:
        """Every call to submit, in lists as they become ready; ends when no task is left or on ``stop``.

        Yields None before it blocks (without spinning) for outcomes in flight: submit what you hold.
        """
        while not stop.is_set():
            if not self._has_work():
                yield None
            with self._cond:
                while not self._has_work() and not stop.is_set():
                    self._cond.wait(0.2)
                if self._callbacks:
                    callbacks = list(self._callbacks)
                    self._callbacks.clear()
                    node = None
                elif self._ready:
                    node, callbacks = self._ready.popleft(), []
                    values = self.flow.values_for(node)
                else:
                    return
            if callbacks:
                yield callbacks
            if node is not None:
                yield from self._node_chunks(node, values)

    def _has_work(self) -> bool:
        """Something to hand out, or nothing more to wait for (all done, or cancelled)."""
        return bool(self._ready or self._callbacks or self.flow.open_nodes == 0 or self._cancelled)

    def _node_chunks(self, node: Node, values: dict[str, Any]) -> Iterator[list[TaskItem]]:
        task = self.spec.tasks[node.index]
        if node.dynamic:
            with self._cond:
                self.total += node.count or 0
            self._forget(node.id)  # a line an earlier run wrote for the map before it had items
        chunks = item_chunks(task, self.spec.defaults, values)
        first = next(chunks, None)
        if first is None:
            return
        self._like[node.id] = first[0]
        if not self.kept:  # nothing to skip: hand the items straight through
            yield first
            yield from chunks
            return
        kept_now: list[dict[str, Any]] = []
        for chunk in itertools.chain((first,), chunks):
            run: list[TaskItem] = []
            for item in chunk:
                record = self.kept.get(item.id)
                if record is None or not same_call(record, item, self._spelled):
                    run.append(item)
                    continue
                kept_now.append(record)
                if len(kept_now) >= KEPT_CHUNK:
                    self._take_kept(kept_now)
                    kept_now = []
            if run:
                yield run
        if kept_now:
            self._take_kept(kept_now)

    def _take_kept(self, records: list[dict[str, Any]]) -> None:
        with self._cond:
            self.resumed += len(records)
            self._outcomes(records)
            following, self._pending_records = self._pending_records, []
            self._tally(following)
        if following:
            self._write(following)

    def recorded(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Records just written: returns the records that follow (skipped downstream tasks) to write now."""
        if not self._tracking:  # no dependencies, no callbacks: outcomes change nothing here
            return []
        with self._cond:
            self._outcomes([r for r in records if r.get("kind") == "compute"])
            out, self._pending_records = self._pending_records, []
            self._tally(out)  # skipped downstream tasks: written by the caller, never recorded here
            return out

    def cancel(self) -> Iterator[TaskItem]:
        """Stop following outcomes (a cancelled job records what is unfinished ``cancelled``, not skipped).

        Returns every call of the job, dynamic maps included (one not expanded yet: its own id), for
        the runner to record those without an outcome; their values are not resolved.
        """
        with self._cond:
            self._cancelled = True
            self._tracking = False
            self._ready.clear()
            self._callbacks.clear()
            self._cond.notify_all()
        return self._every_item()

    def _every_item(self) -> Iterator[TaskItem]:
        for node in self.flow.graph.nodes.values():
            task = self.spec.tasks[node.index]
            if not node.dynamic:
                yield from items_of(task, self.spec.defaults)
                continue
            like = next(items_of(task.model_copy(update={"map": None}), self.spec.defaults))
            if node.count is None:
                with self._cond:
                    self.total += 1
                yield like
            else:
                yield from (like._replace(id=f"{node.id}-{k}") for k in range(node.count))

    def job_callback(self, summary: dict[str, Any], failed: bool) -> TaskItem | None:
        """The job-level callback to run with ``summary``, unless absent or already recorded."""
        name = "on_failure" if failed else "on_success"
        callback: CallbackSpec | None = getattr(self.spec, name)
        cb_id = f"job:{name}"
        if not should_fire(cb_id, callback is not None, self.kept):
            if callback is not None:  # its ok line from an earlier run counts, as a task callback's does
                with self._cond:
                    self.resumed += 1
                    self.total += 1
            return None
        assert callback is not None
        d = self.spec.defaults
        like = TaskItem(
            cb_id, "", [], {}, tuple(sorted(set(d.tags))), d.timeout, d.retries, False, d.priority
        )
        with self._cond:
            self.total += 1
        return callback_item(cb_id, callback, summary, like)

    # -- internals (under the lock) -------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """The workflow as the dashboard draws it (``graphview``)."""
        with self._cond:
            return graph_view(self.flow.graph, self.counts)

    def _tally(self, records: list[dict[str, Any]]) -> None:
        """Count outcomes per task (a map's items under the map), a chunk's distinct pairs at once."""
        nodes = self.flow.graph.nodes
        pairs = Counter(
            (unit_id if unit_id in nodes else unit_id.rpartition("-")[0], status)
            for unit_id, status in zip(map(_ID, records), map(_STATUS, records), strict=True)
        )
        for (node_id, status), n in pairs.items():
            if node_id in nodes:
                self.counts.setdefault(node_id, Counter())[status] += n

    def _outcomes(self, records: list[dict[str, Any]]) -> None:
        graph = self.flow.graph
        self._tally(records)
        for record in records if self._any_callback else ():
            unit_id, status = record["id"], record["status"]
            cb_id = callback_id(unit_id, status)
            if cb_id is None:
                continue
            where = graph.locate(unit_id)
            if where is None:
                continue
            node = where[0]
            on_success, on_failure = self._handlers[node.id]
            callback = on_success if status == "ok" else on_failure
            if callback is None:
                continue
            if not should_fire(cb_id, True, self.kept):
                self.resumed += 1
                self.total += 1
                continue
            like = self._like.get(node.id)
            if like is None:  # pragma: no cover - an outcome always follows its node's items
                continue
            self._callbacks.append(callback_item(cb_id, callback, record, like))
            self.total += 1
        self._apply(self.flow.done([(r["id"], r["status"], r.get("result")) for r in records]))

    def _apply(self, step: Step) -> None:
        self._ready.extend(step.ready)
        for node, reason in step.skipped:
            self._pending_records.extend(self._not_run(node, "skipped", {"reason": reason}))
        for node, message in step.invalid:
            error = {"type": "TypeError", "message": message, "traceback": ""}
            self._pending_records.extend(self._not_run(node, "failed", {"error": error}))
        if step.ready or step.skipped or step.invalid:
            self._cond.notify_all()

    def _not_run(self, node: Node, status: str, extra: dict[str, Any]) -> Iterator[dict[str, Any]]:
        task = self.spec.tasks[node.index]
        if node.dynamic and node.count is None:  # one record for the map whose items never existed
            self.total += 1
        static = task.map if isinstance(task.map, list) else None
        for k, unit in enumerate(unit_ids(node)):
            args = (
                task.args if static is None else (static[k] if isinstance(static[k], list) else [static[k]])
            )
            yield {"id": unit, "kind": "compute", "call": task.call, "args": args, "kwargs": task.kwargs,
                   "status": status, **extra}  # fmt: skip
