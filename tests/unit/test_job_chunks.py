"""A job's calls made a chunk at a time are the calls made one item at a time (no sockets)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from pyrocluster.coordinator.calls import Call
from pyrocluster.jobs.callcolumns import calls_of
from pyrocluster.jobs.items import CHUNK, TaskItem, item_chunks
from pyrocluster.jobs.spec import load_job

FIELDS = ("service", "name", "args", "kwargs", "tags", "timeout_s", "retries", "retry_on_error", "priority")


class Waiter:
    def settled(self, calls: list[Call]) -> None:  # pragma: no cover - nothing ends here
        pass


def one_by_one(base: str, call: str, entries: list[Any], rest: tuple[Any, ...]) -> list[TaskItem]:
    """The items as a plain loop makes them: each entry its arguments, a list as it is."""
    return [
        TaskItem(f"{base}-{k}", call, entry if isinstance(entry, list) else [entry], *rest)
        for k, entry in enumerate(entries)
    ]


def test_a_map_in_chunks_is_the_map_item_by_item_across_chunk_edges(tmp_path: Path) -> None:
    entries: list[Any] = [[i, i] for i in range(CHUNK + 3)]
    entries[5], entries[CHUNK + 1] = 7, {"a": 1}  # not lists: the only argument, in either chunk
    job = {
        "defaults": {"tags": ["b", "a", "b"], "timeout": 9, "retries": 2, "priority": 3},
        "tasks": [{"id": "m", "call": "add", "map": entries, "kwargs": {"k": 1}, "resources": {"cpu": 2}}],
    }
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(job))
    spec = load_job(path)
    chunks = list(item_chunks(spec.tasks[0], spec.defaults))
    assert [len(c) for c in chunks] == [CHUNK, 3]
    items = list(itertools.chain.from_iterable(chunks))
    first = items[0]
    rest = (first.kwargs, ("a", "b"), 9.0, 2, first.retry_on_error, 3, "compute", (("cpu", 2.0),))
    assert items == one_by_one("m", "add", entries, rest)
    assert all(type(item) is TaskItem for item in items)


def test_calls_of_a_chunk_are_the_calls_made_one_at_a_time() -> None:
    items = [
        TaskItem("a-0", "add", [1, 2], {}, ("x",), 5.0, 1, False, 0),
        TaskItem("a-1", "add", [3, 4], {}, (), 5.0, 1, False, 2, "callback", (("gpu", 1.0),)),
        TaskItem("b", "echo", [], {"v": 1}, ("x",), 1.5, 0, True, -1),
    ]
    waiter = Waiter()
    made = calls_of(items, waiter)
    for call, item in zip(made, items, strict=True):
        alone = Call(
            "compute",
            item.call,
            item.args,
            item.kwargs,
            frozenset(item.tags),
            item.timeout_s,
            item.retries,
            item.retry_on_error,
            waiter,
            item,
            item.priority,
            item.resources,
        )
        assert [getattr(call, f) for f in FIELDS] == [getattr(alone, f) for f in FIELDS]
        assert (call.waiter, call.tag, call.resources) == (waiter, item, item.resources)
    assert calls_of([], waiter) == []
