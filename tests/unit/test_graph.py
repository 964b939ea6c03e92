"""Workflow graph: validation with places and lines, readiness, values passed, skipping downstream, resume."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from pyrocluster.errors import JobFileError
from pyrocluster.jobs.graph import Flow, Graph, Step, callback_id, find_refs, resolve, should_fire, unit_ids
from pyrocluster.jobs.items import callbacks_of, count_task_items, items_of, task_names
from pyrocluster.jobs.spec import JobSpec, load_job


def load(tmp_path: Path, text: str) -> JobSpec:
    path = tmp_path / "job.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_job(path)


def graph_of(spec: JobSpec) -> Graph:
    from pyrocluster.jobs.graph import build_graph

    def fail(loc: Any, message: str) -> Exception:
        return AssertionError(message)

    return build_graph(spec.tasks, fail)


def invalid(tmp_path: Path, text: str) -> JobFileError:
    with pytest.raises(JobFileError) as info:
        load(tmp_path, text)
    return info.value


def ids(step: Step) -> list[str]:
    return [node.id for node in step.ready]


# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (
            """
            tasks:
              - {id: a, call: echo, args: [{$result: b}]}
              - {id: b, call: echo, args: [{$result: a}]}
            """,
            "tasks[1].args[0].$result (line 4)",
            "dependency cycle: a -> b -> a",
        ),
        (
            """
            tasks:
              - {id: a, call: echo, needs: [a]}
            """,
            "tasks[0].needs[0] (line 3)",
            "dependency cycle: a -> a",
        ),
        (
            """
            tasks:
              - id: a
                call: echo
                needs: [c]
              - {id: b, call: echo, needs: [a]}
              - id: c
                call: add
                kwargs: {x: {$result: b}}
            """,
            "tasks[1].needs[0] (line 6)",
            "dependency cycle: a -> c -> b -> a",
        ),
        (
            """
            tasks:
              - {id: first, call: echo}
              - id: b
                call: echo
                args: [1, [2, {$result: frist}]]
            """,
            "tasks[1].args[1][1].$result (line 6)",
            "unknown task id 'frist' (did you mean 'first'?)",
        ),
        (
            """
            tasks:
              - id: a
                call: echo
                kwargs: {x: [0, {$result: nope}]}
            """,
            "tasks[0].kwargs.x[1].$result (line 5)",
            "unknown task id 'nope'",
        ),
        (
            """
            tasks:
              - {id: a, call: echo}
              - {id: b, call: echo, needs: [a, zzz]}
            """,
            "tasks[1].needs[1] (line 4)",
            "unknown task id 'zzz'",
        ),
        (
            """
            tasks:
              - {id: a, call: echo}
              - id: b
                call: echo
                kwargs:
                  $result: a
            """,
            "tasks[1].kwargs.$result (line 7)",
            "'$result' is not an argument name",
        ),
        (
            """
            tasks:
              - {id: a, call: echo}
              - {id: b, call: echo, args: [{$result: a, extra: 1}]}
            """,
            "tasks[1].args[0].extra (line 4)",
            "takes no other key",
        ),
        (
            """
            tasks:
              - {id: a, call: echo}
              - {id: b, call: echo, args: [{$result: 5}]}
            """,
            "tasks[1].args[0].$result (line 4)",
            "expected a task id",
        ),
        (
            """
            tasks:
              - {id: p, call: fib, map: [1, 2]}
              - {id: b, call: echo, args: [{$result: p-2}]}
            """,
            "tasks[1].args[0].$result (line 4)",
            "'p-2': the map 'p' has 2 item(s)",
        ),
        (
            """
            tasks:
              - {id: src, call: echo, args: [[1, 2]]}
              - {id: m, call: echo, map: {$result: src}}
              - {id: b, call: echo, args: [{$result: m-0}]}
            """,
            "tasks[2].args[0].$result (line 5)",
            "one item of the dynamic map 'm'",
        ),
        (
            """
            tasks:
              - {id: src, call: echo, args: [[1, 2]]}
              - {id: m, call: echo, map: {$result: nope}}
            """,
            "tasks[1].map.$result (line 4)",
            "unknown task id 'nope'",
        ),
        (
            """
            tasks:
              - {id: src, call: echo, args: [[1, 2]]}
              - {id: m, call: echo, map: {$result: src}}
              - {id: m-7, call: echo}
            """,
            "tasks[2].id (line 5)",
            "clashes with the items of the dynamic map 'm'",
        ),
        (
            """
            tasks:
              - {id: a, call: echo, needs: [{$result: b}]}
            """,
            "tasks[0].needs[0] (line 3)",
            "expected a string",
        ),
    ],
)
def test_bad_dependencies_name_the_place_and_line(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    err = invalid(tmp_path, text)
    assert err.where == where, str(err)
    assert message in err.message, str(err)


def test_refs_are_found_at_any_depth_and_resolved_without_touching_the_spec() -> None:
    args = [1, {"k": [{"$result": "a"}]}, {"$result": "b-1"}]
    assert [(ref["$result"], loc) for ref, loc in find_refs(args, ("args",))] == [
        ("a", ("args", 1, "k", 0)),
        ("b-1", ("args", 2)),
    ]
    assert resolve(args, {"a": [1, 2], "b-1": "x"}) == [1, {"k": [[1, 2]]}, "x"]
    assert args[2] == {"$result": "b-1"}


def test_refs_next_to_long_runs_of_plain_values_are_found_and_plain_lists_hold_none() -> None:
    numbers = list(range(20_000))
    assert list(find_refs([numbers, [numbers]], ("args",))) == []
    args = [numbers, [*numbers, [0, {"$result": "a"}]], ["x", 1.5, None, {"k": {"$result": "b"}}]]
    assert [(ref["$result"], loc) for ref, loc in find_refs(args, ("args",))] == [
        ("a", ("args", 1, 20_000, 1)),
        ("b", ("args", 2, 3, "k")),
    ]


def test_callbacks_come_from_the_task_or_the_defaults_and_null_turns_them_off(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        """
        defaults:
          on_failure: {call: echo, args: [dflt]}
        on_success: {call: echo}
        tasks:
          - {id: a, call: add, on_success: {call: sha256}}
          - {id: b, call: add, on_failure: null}
        """,
    )
    a, b = spec.tasks
    ok_a, bad_a = callbacks_of(a, spec.defaults)
    assert ok_a is not None and ok_a.call == "sha256" and bad_a is not None and bad_a.args == ["dflt"]
    assert callbacks_of(b, spec.defaults) == (None, None)
    assert task_names(spec) == {"add", "echo", "sha256"}
    err = invalid(tmp_path, "tasks:\n  - {call: add, on_success: {call: echo, tags: [x]}}\n")
    assert err.where == "tasks[0].on_success.tags (line 2)" and "unknown key 'tags'" in err.message


# ---------------------------------------------------------------------------------------------- running

DIAMOND = """
tasks:
  - {id: a, call: echo, args: [1]}
  - {id: b, call: add, args: [{$result: a}, 10]}
  - {id: c, call: add, args: [{$result: a}, 20]}
  - {id: d, call: add, args: [{$result: b}, {$result: c}]}
  - {id: lone, call: echo, args: [x]}
"""


def test_a_diamond_runs_in_edge_order_and_passes_values(tmp_path: Path) -> None:
    spec = load(tmp_path, DIAMOND)
    flow = Flow(graph_of(spec))
    assert ids(flow.start()) == ["a", "lone"]
    assert flow.waiting_units == 3
    step = flow.done([("a", "ok", 1), ("lone", "ok", "x")])
    assert ids(step) == ["b", "c"] and not step.skipped
    b, c = step.ready
    assert [item.args for item in items_of(spec.tasks[1], spec.defaults, flow.values_for(b))] == [[1, 10]]
    flow.values_for(c)
    assert "a" not in flow.values  # released once both receivers have it
    assert ids(flow.done([("b", "ok", 11)])) == []
    step = flow.done([("c", "ok", 21)])
    assert ids(step) == ["d"]
    (item,) = items_of(spec.tasks[3], spec.defaults, flow.values_for(step.ready[0]))
    assert item.args == [11, 21] and spec.tasks[3].args[0] == {"$result": "b"}
    assert flow.open_nodes == 0  # d: nobody waits for it, done once handed out
    flow.done([("d", "ok", 32)])
    assert flow.open_nodes == 0 and flow.waiting_units == 0


def test_a_failure_skips_every_descendant_at_once_and_spares_other_branches(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        """
        tasks:
          - {id: root, call: echo}
          - {id: mid, call: fail, needs: [root]}
          - {id: m, call: fib, map: [1, 2, 3], needs: [mid]}
          - {id: one, call: echo, args: [{$result: m-1}]}
          - {id: all, call: echo, args: [{$result: m}]}
          - {id: deep, call: echo, needs: [one, all]}
          - {id: side, call: echo, needs: [root]}
        """,
    )
    flow = Flow(graph_of(spec))
    flow.start()
    assert ids(flow.done([("root", "ok", None)])) == ["mid", "side"]
    step = flow.done([("mid", "failed", None)])
    assert [(n.id, reason) for n, reason in step.skipped] == [
        ("m", "upstream mid failed"),
        ("all", "upstream m skipped"),
        ("one", "upstream m-1 skipped"),
        ("deep", "upstream all skipped"),
    ]
    assert list(unit_ids(step.skipped[0][0])) == ["m-0", "m-1", "m-2"]
    assert flow.open_nodes == 0 and flow.waiting_units == 0
    flow.done([("side", "ok", None)])
    assert flow.open_nodes == 0


def test_one_failed_map_item_skips_the_fan_in_at_once_but_not_other_items_dependents(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        """
        tasks:
          - {id: m, call: fib, map: [1, 2, 3]}
          - {id: total, call: echo, args: [{$result: m}]}
          - {id: first, call: echo, args: [{$result: m-0}]}
        """,
    )
    flow = Flow(graph_of(spec))
    flow.start()
    step = flow.done([("m-1", "cancelled", None)])
    assert [(n.id, r) for n, r in step.skipped] == [("total", "upstream m cancelled")]
    assert ids(flow.done([("m-0", "ok", 1)])) == ["first"]
    assert flow.open_nodes == 1  # the map; "first" is handed out and nobody waits for it
    flow.done([("m-2", "ok", 2)])
    assert flow.open_nodes == 0  # the map is done (with a bad item)


def test_dynamic_fan_out_then_fan_in_receives_the_results_in_order(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        """
        tasks:
          - {id: src, call: echo, args: [[[1, 2], 3, [4]]]}
          - {id: sq, call: add, map: {$result: src}, kwargs: {k: {$result: src}}}
          - {id: total, call: echo, args: [{$result: sq}]}
        """,
    )
    assert count_task_items(spec) == 2
    flow = Flow(graph_of(spec))
    flow.start()
    step = flow.done([("src", "ok", [[1, 2], 3, [4]])])
    (sq,) = step.ready
    items = list(items_of(spec.tasks[1], spec.defaults, flow.values_for(sq)))
    assert [(i.id, i.args) for i in items] == [("sq-0", [1, 2]), ("sq-1", [3]), ("sq-2", [4])]
    assert items[0].kwargs == {"k": [[1, 2], 3, [4]]}
    assert sq.count == 3 and "src" not in flow.values
    assert ids(flow.done([("sq-2", "ok", "c"), ("sq-0", "ok", "a")])) == []
    step = flow.done([("sq-1", "ok", "b")])
    assert ids(step) == ["total"] and flow.values_for(step.ready[0]) == {"sq": ["a", "b", "c"]}


def test_a_dynamic_map_over_an_empty_list_or_a_non_list(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        """
        tasks:
          - {id: src, call: echo}
          - {id: m, call: add, map: {$result: src}}
          - {id: after, call: echo, args: [{$result: m}]}
        """,
    )
    flow = Flow(graph_of(spec))
    flow.start()
    assert ids(flow.done([("src", "ok", [])])) == ["m", "after"]
    assert flow.values_for(flow.graph.nodes["after"]) == {"m": []}
    flow = Flow(graph_of(spec))
    flow.start()
    step = flow.done([("src", "ok", 7)])
    assert [(n.id, msg) for n, msg in step.invalid] == [("m", "map: {$result: src} gave int, not a list")]
    assert [(n.id, r) for n, r in step.skipped] == [("after", "upstream m failed")]
    assert list(unit_ids(step.invalid[0][0])) == ["m"] and flow.open_nodes == 0


def test_resume_feeds_kept_results_like_fresh_ones(tmp_path: Path) -> None:
    spec = load(tmp_path, DIAMOND)
    kept = {"a": 1, "b": 11}
    flow = Flow(graph_of(spec))
    queue = flow.start().ready
    ran = []
    while queue:  # what the runner does: kept outcomes go straight back in, the rest "run"
        node = queue.pop(0)
        flow.values_for(node)
        if node.id in kept:
            queue += flow.done([(node.id, "ok", kept[node.id])]).ready
        else:
            ran.append(node.id)
            queue += flow.done([(node.id, "ok", 0)]).ready
    assert ran == ["lone", "c", "d"]


def test_a_chain_of_3000_skips_without_recursion(tmp_path: Path) -> None:
    lines = ["tasks:", "  - {id: t0, call: fail}"]
    lines += [f"  - {{id: t{i}, call: echo, args: [{{$result: t{i - 1}}}]}}" for i in range(1, 3000)]
    spec = load(tmp_path, "\n".join(lines) + "\n")
    flow = Flow(graph_of(spec))
    assert ids(flow.start()) == ["t0"]
    step = flow.done([("t0", "failed", None)])
    assert len(step.skipped) == 2999 and step.skipped[-1][1] == "upstream t2998 skipped"
    assert flow.open_nodes == 0


def test_callbacks_fire_once_per_terminal_outcome() -> None:
    assert callback_id("t-3", "ok") == "t-3:on_success"
    assert callback_id("t", "failed") == "t:on_failure"
    assert callback_id("t", "skipped") is None and callback_id("t", "cancelled") is None
    assert should_fire("t:on_success", True, set())
    assert not should_fire("t:on_success", True, {"t:on_success"})  # recorded before a crash
    assert not should_fire("t:on_success", False, set())
    assert not should_fire(None, True, set())
