"""A job's big values: kept on the workers that made them, written to disk once, made again if lost.

The runner asks every call (but a dynamic map's source, whose list it must expand) to keep a big
result on its worker; the reply then carries a :class:`ValueRef`. :meth:`JobValues.ready` sees
each settled call before it is recorded (on the recorder's thread):

* a kept result is streamed from its holder into ``<output>.values/`` (the record points there)
  and its reference is what the workflow hands to downstream tasks, whose workers fetch it;
* a call that failed with ``ValueGone`` (a holder of one of its arguments died) is not recorded:
  the producer of each lost value runs again (not recorded either: its first ``ok`` line stays)
  and the call is sent again with the new references. The same happens to a producer whose
  holder died before its value was written.

On ``--resume`` a kept result still in its file beside the results file (``keptfiles.py``) is
put on a worker, in chunks, when a call first receives it, and the call receives its reference
like any other; a put value lost with its worker is put again from its file.

At the job's end every holder is told to free the job's values (``free``).
"""

from __future__ import annotations

import logging
import operator
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyrocluster import valuefetch
from pyrocluster.coordinator.calls import Call
from pyrocluster.coordinator.cluster import Cluster
from pyrocluster.errors import TaskFailed
from pyrocluster.jobs import keptfiles
from pyrocluster.jobs.items import TaskItem
from pyrocluster.jobs.keptfiles import KeptFile
from pyrocluster.jobs.spec import JobSpec
from pyrocluster.jobs.values import load_result, spill_stream
from pyrocluster.valueref import ValueRef, refs_in, swapped

MAX_REMAKES = 3
"""Times one task's value is made again before its consumers fail."""
GONE = "ValueGone"
"""The error type of a call whose argument's holder could not give it."""

log = logging.getLogger(__name__)
_VALUE = operator.attrgetter("value")
_REFS = operator.attrgetter("refs")


def new_call(item: TaskItem, waiter: Any, tag: Any) -> Call:
    """The compute call of ``item``."""
    return Call("compute", item.call, item.args, item.kwargs, frozenset(item.tags), item.timeout_s,
                item.retries, item.retry_on_error, waiter, tag, item.priority, item.resources)  # fmt: skip


@dataclass
class _Waiting:
    """A call sent again once every lost value it needs was made again."""

    call: Call
    pending: set[str]
    new: dict[str, Any] = field(default_factory=dict)


def _lost(error: BaseException | None) -> bool:
    return isinstance(error, TaskFailed) and error.type == GONE


def _item(call: Call) -> TaskItem:
    """The job item of a call: the runner's own (its tag), or the one a remake runs."""
    tag = call.tag
    return tag if isinstance(tag, TaskItem) else tag[1]


class JobValues:
    """The big values of one job run (thread-safe)."""

    def __init__(self, cluster: Cluster, output: Path, finish: Callable[[list[Call]], None]) -> None:
        self._cluster = cluster
        self._output = output
        self._finish = finish
        """Hands calls back to the runner's recorder (a call that could not be helped)."""
        self._lock = threading.Lock()
        self._holders: set[str] = set()
        self._made: dict[str, tuple[TaskItem, ValueRef]] = {}
        """Reference id -> the item that made it, and the reference as written."""
        self._remaking: dict[str, list[_Waiting]] = {}
        """Lost reference id -> the calls waiting for it to be made again."""
        self._remakes: Counter[str] = Counter()
        self._passed: set[int] = set()
        """Calls handed back to be recorded as they are (ids)."""
        self.seen = False
        """True once a result was kept: calls' arguments are then searched for references."""
        self.no_keep: frozenset[str] = frozenset()
        """Task ids whose results the coordinator needs itself (dynamic maps' sources)."""
        self.remade = 0
        """Values made again because their holder was gone."""
        self.remakes = _Remade(self)
        """The waiter of the producers run again."""
        self.released: Callable[[str], bool] = lambda task_id: False
        """Whether the workflow will hand a task's value to no further task (set by the runner)."""
        self._users: Counter[str] = Counter()
        """Reference id -> calls sent with it that have not finished."""
        self._kept_files = False
        """True once ``--resume`` left kept results in their files: arguments may hold them."""
        self._put_lock = threading.Lock()
        """Held while a kept file is put on a worker (one put per file)."""
        self._puts: dict[KeptFile, Any] = {}
        """Kept file -> the reference to its value put on a worker (or the value read whole)."""
        self._put_from: dict[str, KeptFile] = {}
        """Reference id -> the kept file it was put from (put again if lost)."""
        self._spelled: dict[int, Any] = {}

    def read_kept(self, kept: dict[str, dict[str, Any]], spec: JobSpec, spelled: dict[int, Any]) -> None:
        """``--resume``: the kept records' results written beside the results file stay there until
        a call receives them (``keptfiles.read_kept``)."""
        self._spelled = spelled
        if keptfiles.read_kept(kept, self._output, spec, spelled):
            self._kept_files = self.seen = True

    # -- the runner's side ---------------------------------------------------------------------

    def prepare(self, call: Call, item: TaskItem) -> Call:
        """Mark ``call`` to keep a big result, and list the references its arguments hold."""
        call.keep = item.id not in self.no_keep
        if self._kept_files:
            item = self._put_files(call, item)
        if self.seen:
            call.refs = refs = tuple(refs_in(item.args) + refs_in(item.kwargs))
            if refs:
                with self._lock:
                    self._users.update(ref.id for ref in refs)
        return call

    def _put_files(self, call: Call, item: TaskItem) -> TaskItem:
        """``item`` with each kept file among its arguments replaced by a reference to its value
        put on a worker (``call`` and its tag changed alike)."""
        files = keptfiles.files_in(item.args, keptfiles.files_in(item.kwargs))
        if not files:
            return item
        new = {id(kept): self._put(kept, call) for kept in files}
        old = item
        args, kwargs = keptfiles.replaced(item.args, new), keptfiles.replaced(item.kwargs, new)
        item = item._replace(args=args, kwargs=kwargs)
        call.args, call.kwargs = item.args, item.kwargs
        if call.tag is old:
            call.tag = item
        elif isinstance(call.tag, tuple):
            call.tag = (call.tag[0], item)
        return item

    def _put(self, kept: KeptFile, call: Call, instead_of: str = "") -> Any:
        """The reference to ``kept``'s value on a worker, put there the first time (again when
        the reference ``instead_of`` was lost); the value read whole when no worker takes it."""
        with self._put_lock:
            done = self._puts.get(kept)
            if done is not None and not (type(done) is ValueRef and done.id == instead_of):
                return done
            ref = keptfiles.put(kept, call, self._cluster.settings, self._cluster.sender_id)
            if ref is None:
                log.warning("the value of %s is sent from the coordinator", kept.task_id)
                try:
                    value = load_result({"id": kept.task_id, "result": kept.reference}, self._output)
                except ValueError as exc:  # changed since the job started: the call cannot send it
                    log.warning("the value of %s cannot be sent: %s", kept.task_id, exc)
                    return kept
                self._spelled[id(value)] = kept.reference
                self._puts[kept] = value
                return value
            self._puts[kept] = ref
        with self._lock:
            self._holders.add(ref.uri)
            self._put_from[ref.id] = kept
        return ref

    def prepare_all(self, calls: list[Call]) -> list[Call]:
        """``prepare`` the runner's calls (each tagged with its item), a chunk at once."""
        if self.seen:
            return [self.prepare(call, call.tag) for call in calls]
        no_keep = self.no_keep
        if not no_keep:  # the common chunk: every result may stay, no argument is a reference
            for call in calls:
                call.keep = True
            return calls
        for call in calls:  # a dynamic map's source keeps nothing: its list is expanded here
            call.keep = call.tag.id not in no_keep
        return calls

    def ready(self, calls: list[Call]) -> list[Call]:
        """The settled calls to record now; the others are being helped (see the module)."""
        if (
            not self._passed
            and ValueRef not in set(map(type, map(_VALUE, calls)))
            and not any(map(_REFS, calls))
        ):
            return calls  # the common chunk: no kept result to write, no reference to count down
        out: list[Call] = []
        for call in calls:
            if call.id in self._passed:
                self._passed.discard(call.id)
            elif call.error is None and type(call.value) is ValueRef:
                if not self._written(call, call.value):
                    continue
            elif call.refs and _lost(call.error):
                self._remake_for(call)
                continue
            out.append(call)
        done = [ref for call in out for ref in call.refs]
        if done:
            self._finished_with(done)
        return out

    def _finished_with(self, refs: list[ValueRef]) -> None:
        """Calls that received ``refs`` finished: free each value no call will need any more
        (a leaf's, a map's and a callback's values wait for the job's end)."""
        unused: dict[str, list[str]] = {}
        with self._lock:
            for ref in refs:
                self._users[ref.id] -= 1
                if self._users[ref.id] <= 0:
                    del self._users[ref.id]
                    if ref.source and self.released(ref.source):
                        unused.setdefault(ref.uri, []).append(ref.id)
        owner = self._cluster.sender_id
        for uri, ids in unused.items():
            valuefetch.free(uri, owner, ids, self._cluster.settings)
        freed = {value_id for ids in unused.values() for value_id in ids}
        if freed and self._kept_files:
            with self._put_lock:  # a freed put value is put again if a call still receives it
                for kept in [k for k, v in self._puts.items() if type(v) is ValueRef and v.id in freed]:
                    del self._puts[kept]

    def _written(self, call: Call, ref: ValueRef) -> bool:
        """Write a kept result beside the results file; False when its holder is gone (it is made
        again and the call is recorded then)."""
        item = _item(call)
        ref = ref.from_source(item.id)
        try:
            settings = self._cluster.settings
            read = lambda sink: valuefetch.stream(ref, settings, sink)  # noqa: E731
            ref.file = spill_stream(item.id, self._output, read)
        except valuefetch.ValueGone as exc:
            log.warning("the result of %s is lost before it was written: %s", item.id, exc)
            if not self._count_remake(item.id):
                call.error = TaskFailed(GONE, f"{exc} (made {MAX_REMAKES} times)")
                call.value = None
                return True
            again = self.prepare(new_call(item, call.waiter, call.tag), item)
            again.keep = True
            self._cluster.submit_calls([again])
            return False
        except OSError as exc:
            call.value = None
            call.error = TaskFailed("NotRecordable", f"the result cannot be kept: {exc}")
            return True
        call.value = ref
        with self._lock:
            self._holders.add(ref.uri)
            self._made[ref.id] = (item, ref)
            self.seen = True
        return True

    def _count_remake(self, task_id: str) -> bool:
        with self._lock:
            if self._remakes[task_id] >= MAX_REMAKES:
                return False
            self._remakes[task_id] += 1
            self.remade += 1
            return True

    # -- lost values ---------------------------------------------------------------------------

    def _remake_for(self, call: Call) -> None:
        """Make again the lost values ``call`` needs, then send it again."""
        message = call.error.message if isinstance(call.error, TaskFailed) else ""
        lost = [r for r in call.refs if r.id in message] or list(call.refs)
        starts: list[Call] = []
        waiting = _Waiting(call, {ref.id for ref in lost})
        with self._lock:
            put = [(ref, self._put_from[ref.id]) for ref in lost if ref.id in self._put_from]
        for ref, kept in put:  # put on a worker from its file (--resume): put again
            if not self._count_remake(kept.task_id):
                self._give_up([call], "it cannot be put again")
                return
            waiting.new[ref.id] = self._put(kept, call, instead_of=ref.id)
            waiting.pending.discard(ref.id)
        lost = [ref for ref in lost if ref.id in waiting.pending]
        if not lost:
            log.warning("a value %s needs is lost: it is put again from its file", _item(call).id)
            self._cluster.submit_calls([self._again(waiting)])
            return
        with self._lock:
            producers = [self._made.get(ref.id) for ref in lost]
        if any(p is None for p in producers) or not all(self._count_remake(p[0].id) for p in producers if p):
            self._give_up([call], "it cannot be made again")
            return
        with self._lock:
            for ref, made in zip(lost, producers, strict=True):
                assert made is not None
                entry = self._remaking.get(ref.id)
                if entry is None:
                    self._remaking[ref.id] = [waiting]
                    producer, _ = made
                    remake = self.prepare(new_call(producer, self.remakes, (ref.id, producer)), producer)
                    remake.keep = True
                    starts.append(remake)
                else:
                    entry.append(waiting)
        log.warning("a value %s needs is lost: its producer runs again", _item(call).id)
        if starts:
            self._cluster.submit_calls(starts)

    def remade_one(self, call: Call) -> None:
        """A producer ran again (on a transport thread): send its waiting calls again, or fail them."""
        lost_id, producer = call.tag
        if call.error is None:
            value = call.value
            if type(value) is ValueRef:
                value = value.from_source(producer.id)
                with self._lock:
                    _, old = self._made[lost_id]
                    value.file = old.file  # the record of the first run points at its file
                    self._holders.add(value.uri)
                    self._made[value.id] = (producer, value)
            with self._lock:
                waiting = self._remaking.pop(lost_id, [])
            again: list[Call] = []
            for entry in waiting:
                entry.new[lost_id] = value
                entry.pending.discard(lost_id)
                if not entry.pending:
                    again.append(self._again(entry))
            if again:
                self._cluster.submit_calls(again)
            return
        if call.refs and _lost(call.error):  # the producer's own arguments were lost too
            self._remake_for(call)
            return
        self._give_up([call], f"running {producer.id} again failed: {call.error}")

    def _again(self, entry: _Waiting) -> Call:
        """``entry``'s call with the new values in place of the lost ones."""
        old = entry.call
        item = _item(old)
        item = item._replace(args=swapped(item.args, entry.new), kwargs=swapped(item.kwargs, entry.new))
        tag = item if isinstance(old.tag, TaskItem) else (old.tag[0], item)
        call = self.prepare(new_call(item, old.waiter, tag), item)
        call.keep = old.keep
        with self._lock:  # the first attempt's users, counted again by ``prepare``
            self._users.subtract(ref.id for ref in old.refs)
        return call

    def _give_up(self, calls: list[Call], why: str) -> None:
        """Record calls as failed for their lost value (a remake's: the calls waiting for it)."""
        for call in calls:
            if isinstance(call.tag, TaskItem):
                lost = call.error.message if isinstance(call.error, TaskFailed) else str(call.error)
                call.error = TaskFailed(GONE, f"{lost}; {why}")
                call.value = None
                self._passed.add(call.id)
                self._finish([call])
                continue
            with self._lock:
                waiting = self._remaking.pop(call.tag[0], [])
            self._give_up([w.call for w in waiting], why)

    # -- the end -------------------------------------------------------------------------------

    def free(self) -> int:
        """Tell every worker that kept a value of this job to drop them; how many were dropped."""
        with self._lock:
            holders = sorted(self._holders)
            self._holders.clear()
        owner = self._cluster.sender_id
        return sum(valuefetch.free(uri, owner, None, self._cluster.settings) for uri in holders)


class _Remade:
    """The waiter of a producer run again."""

    def __init__(self, values: JobValues) -> None:
        self._values = values

    def settled(self, calls: list[Call]) -> None:
        for call in calls:
            self._values.remade_one(call)
