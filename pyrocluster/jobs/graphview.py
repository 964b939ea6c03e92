"""A running workflow as the dashboard draws it: one node per ``tasks`` entry (a map is one node
with its counts), its edges, and a layer per node for a left-to-right layout.

Its size is the number of ``tasks`` entries, never the number of items: a 20,000-item map is one
node, so drawing it costs the same as drawing a single call.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pyrocluster.jobs.graph import Graph

STATUSES = ("ok", "failed", "skipped", "cancelled")


def dependency_ids(deps: tuple[str, ...], graph: Graph) -> set[str]:
    """The task ids a node's dependency keys belong to (``ID-k`` is an item of map ``ID``)."""
    ids = set()
    for key in deps:
        if key in graph.nodes:
            ids.add(key)
        else:
            ids.add(key.rpartition("-")[0])
    return ids & graph.nodes.keys()


def _layers(graph: Graph, edges: list[tuple[str, str]]) -> dict[str, int]:
    """Each node's longest distance from a root (nodes are in file order, which the graph allows)."""
    upstream: dict[str, list[str]] = {node_id: [] for node_id in graph.nodes}
    for source, target in edges:
        upstream[target].append(source)
    layer: dict[str, int] = {}
    pending = list(graph.nodes)
    while pending:  # file order need not be topological: settle what can be, then repeat
        left = []
        for node_id in pending:
            if all(u in layer for u in upstream[node_id]):
                layer[node_id] = 1 + max((layer[u] for u in upstream[node_id]), default=-1)
            else:
                left.append(node_id)
        if len(left) == len(pending):  # a cycle cannot pass validation; never loop for ever
            layer.update({node_id: 0 for node_id in left})
            break
        pending = left
    return layer


def graph_view(graph: Graph, counts: dict[str, Counter[str]]) -> dict[str, Any]:
    """``{"nodes": [...], "edges": [[from, to], ...]}`` from the graph and per-node outcome counts."""
    edges = sorted(
        (source, node.id) for node in graph.nodes.values() for source in dependency_ids(node.deps, graph)
    )
    layers = _layers(graph, edges)
    nodes = []
    for node in graph.nodes.values():
        seen = counts.get(node.id, Counter())
        total = node.count if node.is_map else 1
        finished = sum(seen[s] for s in STATUSES)
        if total is not None and finished >= total and (total or node.state != "waiting"):
            state = (
                "failed" if seen["failed"] else "skipped" if seen["skipped"] == total and total else "done"
            )
        elif finished or node.state != "waiting":  # handed out (a leaf is "done" in the flow at once)
            state = "running"
        else:
            state = "waiting"
        nodes.append(
            {
                "id": node.id,
                "map": node.is_map,
                "total": total,
                "layer": layers[node.id],
                "state": state,
                **{s: seen[s] for s in STATUSES},
            }
        )
    return {"nodes": nodes, "edges": [list(e) for e in edges]}
