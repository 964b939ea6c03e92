"""Kept results written beside the results file, fed downstream on ``--resume`` without being read.

A kept ``ok`` record whose result is a ``$file`` reference to a big ``.npy`` or ``.msgpack`` file
keeps, in place of its value, a :class:`KeptFile` (the file checked against its sha256 first: a
missing or changed one runs its task again). Only when a call receives it is the file put, in
chunks, on a worker that can run that call (``valueput.py``), which keeps it as it keeps a result
of its own; the call receives the :class:`ValueRef` (SPEC 9: the coordinator's memory does not
grow with the values flowing between tasks). The coordinator reads a value whole as before where
it needs it itself (a dynamic map's source), for a small file, or for a frame (``.arrow``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pyrocluster import valueput
from pyrocluster.config import Settings
from pyrocluster.coordinator.calls import Call
from pyrocluster.jobs.graph import build_graph
from pyrocluster.jobs.spec import JobSpec
from pyrocluster.jobs.values import file_digest, load_result
from pyrocluster.nameserver import registry
from pyrocluster.nameserver.registry import WorkerEntry
from pyrocluster.valueref import KEEP_BYTES, ValueRef, instances_in

log = logging.getLogger(__name__)


class KeptFile:
    """A kept result still in its file beside the results file (never sent: see the module)."""

    __slots__ = ("task_id", "path", "kind", "reference")

    def __init__(self, task_id: str, path: Path, kind: str, reference: dict[str, Any]) -> None:
        self.task_id = task_id
        self.path = path
        self.kind = kind
        self.reference = reference
        """The record's ``$file`` reference: how every record spells the value."""

    def __repr__(self) -> str:
        return f"KeptFile({self.task_id!r}, {self.reference.get('$file')!r})"


def _never(loc: Any, message: str) -> Exception:  # pragma: no cover - load_job validated the graph
    return AssertionError(f"{loc}: {message}")


def read_kept(
    kept: dict[str, dict[str, Any]], output: Path, spec: JobSpec, spelled: dict[int, Any]
) -> list[KeptFile]:
    """Replace each kept record's ``$file`` result by a :class:`KeptFile` or, where the coordinator
    needs the value, the value itself; drop the records whose file is gone or changed (they run
    again). ``spelled`` gets each ``id()`` -> the reference (see ``workflow.same_call``)."""
    with_files = [k for k, r in kept.items() if isinstance(r.get("result"), dict) and "$file" in r["result"]]
    if not with_files:
        return []
    graph = build_graph(spec.tasks, _never)
    needed_whole = {node.map_source for node in graph.nodes.values() if node.map_source}
    base = output.parent.resolve()
    files: list[KeptFile] = []
    for task_id in with_files:
        record = kept[task_id]
        reference = record["result"]
        try:
            path = (base / str(reference["$file"])).resolve()
            kind = str(reference.get("type"))
            if (
                record.get("kind") != "compute"
                or task_id in needed_whole
                or kind not in valueput.KINDS
                or base not in path.parents
                or path.stat().st_size <= KEEP_BYTES
            ):
                value = load_result(record, output)  # checks it too
            else:
                if file_digest(path)[0] != reference.get("sha256"):
                    raise ValueError(f"{path} is not the result recorded for {task_id!r} (sha256 differs)")
                value = KeptFile(task_id, path, kind, reference)
                files.append(value)
        except (OSError, ValueError) as exc:  # gone or changed: the task runs again
            log.warning("--resume runs %s again: %s", task_id, exc)
            del kept[task_id]
            continue
        record["result"] = value
        spelled[id(value)] = reference
    return files


def files_in(value: Any, found: list[KeptFile] | None = None) -> list[KeptFile]:
    """Every :class:`KeptFile` inside ``value`` (lists, tuples and dict values, at any depth)."""
    return instances_in(value, KeptFile, [] if found is None else found)


def replaced(value: Any, new: dict[int, Any]) -> Any:
    """``value`` with each object whose ``id()`` is in ``new`` replaced (containers on the way
    copied, everything else shared)."""
    if id(value) in new:
        return new[id(value)]
    kind = type(value)
    if kind is list or kind is tuple:
        return kind(replaced(item, new) for item in value)
    if kind is dict:
        return {key: replaced(item, new) for key, item in value.items()}
    return value


def _places(call: Call, settings: Settings) -> list[WorkerEntry]:
    """The live workers to put a call's value on: those that can run it first, the most slots
    first (its call then runs where its value is when that worker has room)."""
    with registry.connect(settings) as ns:
        entries = registry.compatible(registry.find_workers(ns))
    entries = [e for e in entries if "compute" in e.uris]
    runs = [e for e in entries if call.name in e.tasks and call.tags <= e.tags]
    others = [e for e in entries if e not in runs]
    by_slots = lambda e: -e.slots.get("compute", 0)  # noqa: E731
    return sorted(runs, key=by_slots) + sorted(others, key=by_slots)


def put(kept: KeptFile, call: Call, settings: Settings, owner: str) -> ValueRef | None:
    """Put a kept file's value on a worker for ``call``: its reference (naming the file and the
    task that made it), or None when no worker took it."""
    try:
        places = _places(call, settings)
    except Exception as exc:  # the name server away: the caller falls back
        log.warning("cannot find a worker for the value of %s: %s", kept.task_id, exc)
        return None
    for entry in places:
        try:
            ref = valueput.put_file(entry, kept.path, kept.kind, settings, owner)
        except valueput.PutFailed as exc:
            log.warning("the value of %s could not be put on a worker: %s", kept.task_id, exc)
            continue
        except OSError as exc:
            log.warning("the value of %s cannot be read: %s", kept.task_id, exc)
            return None
        ref = ref.from_source(kept.task_id)
        ref.file = kept.reference
        return ref
    return None
