"""Workflow graph of a job: dependencies, ``$result`` resolution, cycle check, downstream skipping (pure).

A job's tasks form a graph through ``{$result: ID}`` arguments, ``map: {$result: ID}`` (dynamic
fan-out) and ``needs: [IDs]``. :func:`build_graph` validates it before anything runs; a
:class:`Flow` then follows one run: told each outcome once it is written, it says which tasks may
start (with the values they receive) and which must be recorded ``skipped``. No sockets, no
threads, no clock: the runner owns those.
"""

from __future__ import annotations

import difflib
from collections import deque
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

RESULT_KEY = "$result"
"""The key of a reference to an upstream's result: ``{$result: ID}``."""

Loc = tuple[Any, ...]
Fail = Callable[[Loc, str], Exception]
"""Builds the error for a place in the job file (key path) and a message; the caller raises it."""


class TaskEntry(Protocol):
    """What the graph reads of one ``tasks`` entry (``jobs.spec.TaskSpec`` fits)."""

    id: str
    args: list[Any]
    kwargs: dict[str, Any]
    map: Any
    needs: list[str]


_CONTAINERS = frozenset({list, dict})


def find_refs(value: Any, loc: Loc) -> Iterator[tuple[Any, Loc]]:
    """Every ``{$result: ID}`` inside ``value`` (lists and mapping values, at any depth) with its place.

    A list holding no list or dict (a fan-out's 20,000 numbers) is passed over in one C-level
    look at its items' types, not an entry and a place each."""
    stack = [(value, loc)]
    while stack:
        item, here = stack.pop()
        if type(item) is list:
            if _CONTAINERS.isdisjoint(map(type, item)):
                continue
            stack.extend((sub, (*here, i)) for i, sub in reversed(list(enumerate(item))))
        elif type(item) is dict:
            if RESULT_KEY in item:
                yield item, here
            else:
                stack.extend((sub, (*here, key)) for key, sub in reversed(list(item.items())))


def resolve(value: Any, values: dict[str, Any]) -> Any:
    """``value`` with every ``{$result: ID}`` replaced by ``values[ID]`` (a copy; the spec is untouched)."""
    if type(value) is list:
        return [resolve(item, values) for item in value]
    if type(value) is dict:
        if RESULT_KEY in value:
            return values[value[RESULT_KEY]]
        return {key: resolve(item, values) for key, item in value.items()}
    return value


@dataclass(eq=False)
class Node:
    """One ``tasks`` entry in the graph, with its run state (kept by a :class:`Flow`)."""

    id: str
    index: int
    """Position in the job's ``tasks`` list."""
    count: int | None
    """Items of a static map; None for a single call or a dynamic map (until expanded)."""
    dynamic: bool
    """``map: {$result: ID}``: the items are an upstream's list result."""
    deps: tuple[str, ...]
    """Distinct dependency keys: a task id (a single result, or a whole map's list) or ``ID-k``."""
    value_keys: tuple[str, ...]
    """The keys whose values the task receives (``$result`` references and the map source)."""
    map_source: str | None = None
    waiting: int = 0
    state: str = "waiting"
    """``waiting`` for dependencies, ``running`` (its items were handed out) or ``done``."""
    remaining: int = 0
    bad: bool = False
    results: list[Any] | None = None
    """A map's item results, kept only when a downstream task receives the whole list."""

    @property
    def is_map(self) -> bool:
        """True for a static or dynamic map."""
        return self.dynamic or self.count is not None


@dataclass
class Graph:
    """The validated dependency graph of a job (see :func:`build_graph`)."""

    nodes: dict[str, Node]
    watchers: dict[str, list[Node]]
    """Dependency key -> the tasks waiting for it."""
    item_keys: dict[str, list[str]]
    """Map id -> its ``ID-k`` keys that some task depends on by item."""
    needed: dict[str, int]
    """Dependency key -> how many tasks receive its value (values are kept until all have them)."""

    @property
    def has_edges(self) -> bool:
        """True when some task waits for another."""
        return bool(self.watchers)

    def locate(self, unit_id: str) -> tuple[Node, int | None] | None:
        """The node of a single call's id, or the map node and index of an ``ID-k`` item id."""
        node = self.nodes.get(unit_id)
        if node is not None and not node.is_map:
            return node, None
        base, _, k = unit_id.rpartition("-")
        node = self.nodes.get(base)
        if node is None or not node.is_map or not k.isdigit():
            return None
        return node, int(k)


def _item_of(ref: str, nodes: dict[str, Node]) -> Node | None:
    """The map node that ``ref`` names one item of (``ID-k``), or None."""
    base, _, k = ref.rpartition("-")
    node = nodes.get(base)
    if node is None or not node.is_map or not (k.isascii() and k.isdigit()) or (k != "0" and k[0] == "0"):
        return None
    return node


def _dep_key(ref: Any, loc: Loc, nodes: dict[str, Node], fail: Fail) -> tuple[str, str]:
    """(dependency key, node id it belongs to) for a reference, or raise naming the place."""
    if not isinstance(ref, str) or not ref:
        raise fail(loc, f"expected a task id, got {type(ref).__name__} {ref!r}")
    if ref in nodes:
        return ref, ref
    node = _item_of(ref, nodes)
    if node is not None:
        if node.dynamic:
            raise fail(
                loc, f"{ref!r} names one item of the dynamic map {node.id!r}; use {{$result: {node.id}}}"
            )
        assert node.count is not None
        if int(ref.rpartition("-")[2]) >= node.count:
            raise fail(loc, f"{ref!r}: the map {node.id!r} has {node.count} item(s)")
        return ref, node.id
    close = difflib.get_close_matches(ref, list(nodes), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise fail(loc, f"unknown task id {ref!r}{hint}")


def _check_ref(ref: dict[Any, Any], loc: Loc, fail: Fail) -> Any:
    extra = [key for key in ref if key != RESULT_KEY]
    if extra:
        raise fail((*loc, extra[0]), f"a {{{RESULT_KEY}: ID}} reference takes no other key, got {extra[0]!r}")
    return ref[RESULT_KEY]


def _edges_of(task: TaskEntry, j: int, fail: Fail) -> Iterator[tuple[Any, Loc, bool]]:
    """(reference, place, passes a value) for every dependency in a task's args, kwargs and needs."""
    where: Loc = ("tasks", j)
    for ref, loc in find_refs(task.args, (*where, "args")):
        yield _check_ref(ref, loc, fail), (*loc, RESULT_KEY), True
    if RESULT_KEY in task.kwargs:
        raise fail(
            (*where, "kwargs", RESULT_KEY),
            f"{RESULT_KEY!r} is not an argument name: give a reference as a value (x: {{{RESULT_KEY}: ID}})",
        )
    for name, value in task.kwargs.items():
        for ref, loc in find_refs(value, (*where, "kwargs", name)):
            yield _check_ref(ref, loc, fail), (*loc, RESULT_KEY), True
    for i, need in enumerate(task.needs):
        yield need, (*where, "needs", i), False


def build_graph(tasks: Sequence[TaskEntry], fail: Fail) -> Graph:
    """Validate the dependencies of ``tasks`` and build their graph; ``fail`` makes the error raised.

    Rejects unknown ids, one item of a dynamic map, ``$result`` as a key, and cycles (named
    ``a -> b -> a``), each at its key path in the file.
    """
    nodes: dict[str, Node] = {}
    for j, task in enumerate(tasks):
        dynamic = type(task.map) is dict
        if task.map is not None and not dynamic and type(task.map) is not list:
            raise fail(("tasks", j, "map"), "expected a list or {$result: ID}")
        count = None if task.map is None or dynamic else len(task.map)
        # A later entry with the same id and an empty map adds no item (spec._check allows it).
        if task.id not in nodes or count:
            nodes[task.id] = Node(task.id, j, count, dynamic, (), ())
    for node in nodes.values():
        if node.dynamic:
            for other in nodes.values():
                if not other.is_map and _item_of(other.id, {node.id: node}) is node:
                    raise fail(
                        ("tasks", other.index, "id"),
                        f"task id {other.id!r} clashes with the items of the dynamic map {node.id!r}",
                    )
    edges: dict[str, list[tuple[str, Loc]]] = {}
    watchers: dict[str, list[Node]] = {}
    item_keys: dict[str, list[str]] = {}
    needed: dict[str, int] = {}
    for j, task in enumerate(tasks):
        node = nodes[task.id]
        if node.index != j:
            continue
        deps: dict[str, None] = {}
        values: dict[str, None] = {}
        if node.dynamic:
            loc = ("tasks", j, "map", RESULT_KEY)
            key, owner = _dep_key(_check_ref(task.map, loc[:-1], fail), loc, nodes, fail)
            edges.setdefault(node.id, []).append((owner, loc))
            deps[key] = values[key] = None
            node.map_source = key
        for ref, loc, passes in _edges_of(task, j, fail):
            key, owner = _dep_key(ref, loc, nodes, fail)
            edges.setdefault(node.id, []).append((owner, loc))
            deps[key] = None
            if passes:
                values[key] = None
        node.deps, node.value_keys = tuple(deps), tuple(values)
        for key in node.deps:
            watchers.setdefault(key, []).append(node)
            mapped = _item_of(key, nodes) if key not in nodes else None
            if mapped is not None and key not in item_keys.setdefault(mapped.id, []):
                item_keys[mapped.id].append(key)
        for key in node.value_keys:
            needed[key] = needed.get(key, 0) + 1
    _check_cycles(list(nodes), edges, fail)
    return Graph(nodes, watchers, item_keys, needed)


def _check_cycles(order: list[str], edges: dict[str, list[tuple[str, Loc]]], fail: Fail) -> None:
    """Raise at the reference that closes the first cycle found, naming it ``a -> b -> a``."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    for root in order:
        if root in state:
            continue
        path: list[str] = [root]
        stack: list[Iterator[tuple[str, Loc]]] = [iter(edges.get(root, ()))]
        state[root] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            target, loc = step
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                raise fail(loc, "dependency cycle: " + " -> ".join(cycle))
            if target not in state:
                state[target] = 1
                path.append(target)
                stack.append(iter(edges.get(target, ())))


@dataclass
class Step:
    """What a :class:`Flow` decided after some outcomes: tasks to start, tasks to record as not run."""

    ready: list[Node] = field(default_factory=list)
    """Tasks whose dependencies are all ``ok``: hand out their items (see :meth:`Flow.values_for`)."""
    skipped: list[tuple[Node, str]] = field(default_factory=list)
    """Tasks never to run, with the reason (``upstream <id> <status>``): record every item skipped."""
    invalid: list[tuple[Node, str]] = field(default_factory=list)
    """Dynamic maps whose upstream result is not a list: record the task failed with this message."""


class Flow:
    """One run of a graph: told every outcome once it is written, says what may start or is skipped.

    Not thread-safe: the runner calls it under its own lock. A unit is a single call's id or a
    map item's ``ID-k``; outcomes of ids outside the graph (callbacks) are ignored.
    """

    def __init__(self, graph: Graph, followed: Container[str] = ()) -> None:
        self.graph = graph
        self.followed = followed
        """Tasks whose outcomes the caller needs even if no task waits for them (callbacks)."""
        self.values: dict[str, Any] = {}
        self.needed = dict(graph.needed)
        """Receivers still to be handed each kept value."""
        self.open_nodes = len(graph.nodes)
        """Nodes not yet done: the job's tasks are finished when this is 0."""
        self.waiting_units = 0
        """Calls of tasks still waiting for dependencies (dynamic maps count once expanded)."""
        for node in graph.nodes.values():
            node.waiting = len(node.deps)
            node.state, node.bad, node.results = "waiting", False, None
            if node.deps and not node.dynamic:
                self.waiting_units += node.count if node.count is not None else 1

    def start(self) -> Step:
        """The tasks that can start at once (those without dependencies), in file order."""
        step = Step()
        for node in self.graph.nodes.values():
            if not node.deps:
                self._ready(node, step)
        return step

    def values_for(self, node: Node) -> dict[str, Any]:
        """The upstream values a ready task receives, by key (call once per ready task)."""
        out = {key: self.values[key] for key in node.value_keys}
        self._release(node)
        return out

    def done(self, outcomes: Sequence[tuple[str, str, Any]]) -> Step:
        """Outcomes ``(unit id, status, result)`` that are now recorded; returns what follows from them."""
        step = Step()
        nodes, watchers = self.graph.nodes, self.graph.watchers
        for unit_id, status, result in outcomes:
            node = nodes.get(unit_id)
            if node is not None and node.count is None and not node.dynamic:  # a single call
                if node.state != "done":
                    self._finish(node)
                    self._settle(unit_id, status, result, step)
                continue
            # A map item "<id>-<k>" (the hot path of big maps: no parsing beyond this).
            base, _, digits = unit_id.rpartition("-")
            node = nodes.get(base)
            if node is None or node.state != "running" or not digits.isdigit():
                continue
            k = int(digits)
            if node.count is None or k >= node.count:
                continue
            if unit_id in watchers:
                self._settle(unit_id, status, result, step)
            if status == "ok":
                if node.results is not None:
                    node.results[k] = result
            elif not node.bad:
                node.bad = True
                self._fail_key(node.id, f"upstream {node.id} {status}", step)
            node.remaining -= 1
            if node.remaining == 0:
                self._complete_map(node, step)
        return step

    # -- internals ---------------------------------------------------------------------------

    def _finish(self, node: Node) -> None:
        node.state = "done"
        self.open_nodes -= 1

    def _ready(self, node: Node, step: Step) -> None:
        if node.dynamic:
            items = self.values.get(node.map_source or "")
            if not isinstance(items, list):
                self._finish(node)
                self._release(node)
                kind = type(items).__name__ if items is not None else "null"
                step.invalid.append((node, f"map: {{$result: {node.map_source}}} gave {kind}, not a list"))
                self._fail_key(node.id, f"upstream {node.id} failed", step)
                return
            node.count = len(items)
        elif node.deps:
            self.waiting_units -= node.count if node.count is not None else 1
        node.state = "running"
        step.ready.append(node)
        if node.count is not None:
            node.remaining = node.count
            if node.id in self.graph.needed:
                node.results = [None] * node.count
            if node.count == 0:
                self._complete_map(node, step)
                return
        if not (
            node.id in self.graph.watchers or node.id in self.graph.item_keys or node.id in self.followed
        ):
            self._finish(node)  # nobody waits for it: its outcomes change nothing here

    def _release(self, node: Node) -> None:
        """Drop upstream values once every task receiving them has them (or will never run)."""
        for key in node.value_keys:
            left = self.needed[key] - 1
            self.needed[key] = left
            if left == 0:
                self.values.pop(key, None)

    def _complete_map(self, node: Node, step: Step) -> None:
        self._finish(node)
        if not node.bad:
            self._settle(node.id, "ok", node.results, step)
        node.results = None

    def _settle(self, key: str, status: str, result: Any, step: Step) -> None:
        if status != "ok":
            self._fail_key(key, f"upstream {key} {status}", step)
            return
        if key in self.graph.needed:
            self.values[key] = result
        for watcher in self.graph.watchers.get(key, ()):
            watcher.waiting -= 1
            if watcher.waiting == 0 and watcher.state == "waiting":
                self._ready(watcher, step)

    def _fail_key(self, key: str, reason: str, step: Step) -> None:
        """Skip every task waiting for ``key``, and everything downstream of those (no recursion)."""
        todo = deque([(key, reason)])
        while todo:
            key, reason = todo.popleft()
            for watcher in self.graph.watchers.get(key, ()):
                if watcher.state != "waiting":
                    continue
                self._finish(watcher)
                self._release(watcher)
                if not watcher.dynamic:
                    self.waiting_units -= watcher.count if watcher.count is not None else 1
                step.skipped.append((watcher, reason))
                own = f"upstream {watcher.id} skipped"
                todo.append((watcher.id, own))
                todo.extend(
                    (item, f"upstream {item} skipped") for item in self.graph.item_keys.get(watcher.id, ())
                )


def unit_ids(node: Node) -> Iterator[str]:
    """The record ids of a task: its id, or ``ID-k`` per map item (an unexpanded dynamic map: its id)."""
    if node.count is None:
        yield node.id
    else:
        yield from (f"{node.id}-{k}" for k in range(node.count))


def callback_id(unit_id: str, status: str) -> str | None:
    """The id of the callback an outcome fires (``<id>:on_success`` / ``<id>:on_failure``), if any.

    Only a task that ran fires one: ``ok`` fires ``on_success``, ``failed`` (after its last
    attempt; the runner sees no other) ``on_failure``; ``skipped`` and ``cancelled`` fire none.
    """
    if status == "ok":
        return f"{unit_id}:on_success"
    if status == "failed":
        return f"{unit_id}:on_failure"
    return None


def should_fire(callback: str | None, configured: bool, recorded: Container[str]) -> bool:
    """A callback runs once: when configured and its id has no ``ok`` record yet (``--resume``)."""
    return callback is not None and configured and callback not in recorded
