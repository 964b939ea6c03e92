"""Job file loading: defaults, map expansion, and an error naming the place for every kind of mistake."""

from __future__ import annotations

import textwrap
import types
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrocluster.errors import JobFileError
from pyrocluster.jobs import yamlread
from pyrocluster.jobs.items import TaskItem, count_task_items, iter_task_items, required_tags, task_names
from pyrocluster.jobs.spec import load_job, secret_values


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error(tmp_path: Path, text: str) -> JobFileError:
    path = write(tmp_path, text)
    with pytest.raises(JobFileError) as info:
        load_job(path)
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}: ")
    return info.value


def assert_error(exc: JobFileError, where: str, *fragments: str) -> None:
    assert exc.where == where, str(exc)
    for fragment in fragments:
        assert fragment in exc.message, str(exc)


# ---------------------------------------------------------------------------------------------- happy path


def test_defaults_are_filled_in(tmp_path: Path) -> None:
    spec = load_job(write(tmp_path, "tasks:\n  - call: add\n", name="nightly.yaml"))
    assert spec.name == "nightly"
    assert spec.output == "nightly.results.jsonl"
    assert spec.path == str(tmp_path / "nightly.yaml")
    assert spec.crawl is None
    assert list(iter_task_items(spec)) == [
        TaskItem("task-0", "add", [], {}, (), 60.0, 3, False),
    ]


def test_output_follows_the_name_and_stays_relative(tmp_path: Path) -> None:
    spec = load_job(write(tmp_path, "name: demo\ntasks: [{call: add}]\n"))
    assert spec.output == "demo.results.jsonl"
    spec = load_job(write(tmp_path, "name: demo\noutput: out/r.jsonl\ntasks: [{call: add}]\n"))
    assert spec.output == "out/r.jsonl"


def test_task_settings_override_defaults(tmp_path: Path) -> None:
    spec = load_job(
        write(
            tmp_path,
            """
            defaults: {retries: 1, timeout: 5, retry_on_error: true, tags: [gpu]}
            tasks:
              - {id: a, call: add, args: [1, 2]}
              - {id: b, call: add, args: [3, 4], kwargs: {x: 1}, retries: 0, timeout: 0.5,
                 retry_on_error: false, tags: [fast, big, fast]}
            """,
        )
    )
    a, b = iter_task_items(spec)
    assert a == TaskItem("a", "add", [1, 2], {}, ("gpu",), 5.0, 1, True)
    assert b == TaskItem("b", "add", [3, 4], {"x": 1}, ("big", "fast"), 0.5, 0, False)
    assert required_tags(spec) == {("gpu",), ("big", "fast")}
    assert task_names(spec) == {"add"}


def test_priority_defaults_to_0_and_a_task_overrides_the_defaults_one(tmp_path: Path) -> None:
    spec = load_job(write(tmp_path, "tasks: [{id: a, call: add}, {id: b, call: add, priority: -2}]\n"))
    assert [item.priority for item in iter_task_items(spec)] == [0, -2]
    spec = load_job(
        write(tmp_path, "defaults: {priority: 5}\ntasks:\n  - {id: m, call: fib, map: [1, 2]}\n"
              "  - {id: c, call: add, priority: 9}\n")
    )  # fmt: skip
    assert [(item.id, item.priority) for item in iter_task_items(spec)] == [("m-0", 5), ("m-1", 5), ("c", 9)]
    assert_error(error(tmp_path, "tasks:\n  - {call: add, priority: high}\n"), "tasks[0].priority (line 2)",
                 "integer")  # fmt: skip


def test_default_ids_count_list_positions(tmp_path: Path) -> None:
    spec = load_job(write(tmp_path, "tasks: [{call: echo}, {id: x, call: echo}, {call: fib}]\n"))
    assert [item.id for item in iter_task_items(spec)] == ["task-0", "x", "task-2"]
    assert task_names(spec) == {"echo", "fib"}
    assert required_tags(spec) == set()


def test_map_expands_to_numbered_items(tmp_path: Path) -> None:
    spec = load_job(
        write(
            tmp_path,
            """
            tasks:
              - id: primes
                call: count_primes
                map: [[0, 10], [10, 20], 7, "text", {k: v}, null, []]
                kwargs: {verbose: true}
                timeout: 120
              - call: sha256
                map: [a, b]
            """,
        )
    )
    items = list(iter_task_items(spec))
    assert [item.id for item in items] == [f"primes-{k}" for k in range(7)] + ["task-1-0", "task-1-1"]
    # An item that is a list is the args; anything else is the one argument.
    assert [item.args for item in items[:7]] == [[0, 10], [10, 20], [7], ["text"], [{"k": "v"}], [None], []]
    assert all(item.kwargs == {"verbose": True} and item.timeout_s == 120.0 for item in items[:7])
    assert items[7].args == ["a"] and items[7].timeout_s == 60.0
    assert count_task_items(spec) == 9


def test_empty_map_yields_nothing(tmp_path: Path) -> None:
    spec = load_job(write(tmp_path, "tasks:\n  - {call: fib, map: [], tags: [x]}\n  - {call: add}\n"))
    assert [item.id for item in iter_task_items(spec)] == ["task-1"]
    assert count_task_items(spec) == 1
    assert task_names(spec) == {"add"} and required_tags(spec) == set()


def test_dates_stay_strings(tmp_path: Path) -> None:
    spec = load_job(write(tmp_path, "tasks: [{call: echo, args: [2024-01-31, 12:30]}]\n"))
    # YAML 1.1 reads 12:30 as base-60; the date must stay text that msgpack can send.
    assert next(iter_task_items(spec)).args == ["2024-01-31", 750]


def test_big_map_loads_and_iterates_lazily(tmp_path: Path) -> None:
    n = 200_000
    path = tmp_path / "big.yaml"
    with path.open("w") as out:
        out.write("tasks:\n  - id: p\n    call: count_primes\n    map:\n")
        out.writelines(f"      - [{i}, {i + 1}]\n" for i in range(n))
        out.write("  - {id: p-200000, call: add}\n")  # one past the map: no clash
    spec = load_job(path)
    assert count_task_items(spec) == n + 1
    items = iter_task_items(spec)
    assert isinstance(items, types.GeneratorType)
    assert next(items) == TaskItem("p-0", "count_primes", [0, 1], {}, (), 60.0, 3, False)
    last = None
    for last in items:  # noqa: B007 - only the last one matters
        pass
    assert last is not None and last.id == "p-200000" and last.call == "add"


def test_crawl_section_defaults(tmp_path: Path) -> None:
    spec = load_job(
        write(
            tmp_path,
            """
            crawl:
              seeds: [http://127.0.0.1:8000/, "https://Example.com/a", http://127.0.0.1:8000/b]
              extract: {h1: h1, price: ".price"}
            """,
        )
    )
    assert spec.tasks == [] and count_task_items(spec) == 0
    crawl = spec.crawl
    assert crawl is not None
    assert crawl.allow == ["127.0.0.1:8000", "example.com"]
    assert (crawl.max_bytes, crawl.timeout, crawl.robots, crawl.user_agent) == (5_000_000, 30.0, True, None)
    assert crawl.max_depth >= 0 and crawl.max_pages > 0 and crawl.per_host_rate > 0
    assert crawl.extract == {"h1": "h1", "price": ".price"}


def test_incremental_crawl_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRO_TEST_TOKEN", "secret")
    path = write(
        tmp_path,
        """\
        crawl:
          seeds: [http://127.0.0.1:8000/]
          state: site.sqlite
          revisit: new
          sitemaps: true
          headers: {Authorization: {env: PYRO_TEST_TOKEN}, Accept-Language: en}
          cookies: {session: {env: PYRO_TEST_TOKEN}}
        """,
    )
    crawl = load_job(path).crawl
    assert crawl is not None
    assert (crawl.state, crawl.revisit, crawl.sitemaps) == ("site.sqlite", "new", True)
    assert crawl.headers == {"Authorization": {"env": "PYRO_TEST_TOKEN"}, "Accept-Language": "en"}
    assert secret_values(crawl.headers) == {"Authorization": "secret", "Accept-Language": "en"}
    assert "secret" not in repr(crawl), "the job spec holds the variable's name, not its value"


def test_crawl_allow_accepts_hosts_and_ports(tmp_path: Path) -> None:
    spec = load_job(
        write(
            tmp_path,
            """
            crawl:
              seeds: ["http://[::1]:8080/"]
              allow: [127.0.0.1:8000, Example.COM, "[::1]:8080", localhost]
              max_pages: 0
              max_depth: 0
              per_host_rate: 0.5
              robots: false
              max_bytes: 1
              timeout: 2
              user_agent: bot/1
            """,
        )
    )
    assert spec.crawl is not None
    assert spec.crawl.allow == ["127.0.0.1:8000", "example.com", "[::1]:8080", "localhost"]
    assert spec.crawl.robots is False and spec.crawl.user_agent == "bot/1"


# ---------------------------------------------------------------------------------------------- file errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(JobFileError) as info:
        load_job(tmp_path / "nope.yaml")
    assert info.value.message == "no such file"
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: no such file"


def test_directory_is_not_a_job_file(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="directory"):
        load_job(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(b"name: \xff\n")
    with pytest.raises(JobFileError, match="UTF-8"):
        load_job(path)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    exc = error(tmp_path, "tasks:\n  - id: a\n    call: add\n    args: [1, 2\n  - id: b\n")
    assert exc.where.startswith("line 5, column"), str(exc)
    assert "invalid YAML" in exc.message and "line 4" in exc.message, str(exc)


def test_duplicate_yaml_key_names_the_line(tmp_path: Path) -> None:
    exc = error(tmp_path, "tasks:\n  - call: add\n    call: echo\n")
    assert exc.where.startswith("line 3"), str(exc)
    assert "duplicate key 'call'" in exc.message


def test_duplicate_key_found_on_the_tagged_path_too(tmp_path: Path) -> None:
    exc = error(tmp_path, "tasks:\n  - call: !!str add\n    call: echo\n")
    assert exc.where.startswith("line 3") and "duplicate key 'call'" in exc.message, str(exc)


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "the file is empty"), ("# nothing\n", "the file is empty"), ("- a\n- b\n", "got a list")],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, message: str) -> None:
    exc = error(tmp_path, text)
    assert message in exc.message, str(exc)


@pytest.mark.parametrize("text", ["name: x\n", "tasks: []\n", "tasks: []\ncrawl:\n"])
def test_nothing_to_run(tmp_path: Path, text: str) -> None:
    exc = error(tmp_path, text)
    assert "nothing to run" in exc.message and "'tasks'" in exc.message and "'crawl'" in exc.message


# ---------------------------------------------------------------------------------------------- schema errors


@pytest.mark.parametrize(
    ("text", "where", "fragments"),
    [
        ("tasks: [{call: add}]\nretries: 3\n", "retries (line 2)", ["unknown key 'retries'"]),
        ("tasks: [{call: add}]\nnmae: x\n", "nmae (line 2)", ["unknown key 'nmae'", "did you mean 'name'"]),
        (
            "defaults:\n  retires: 1\ntasks: [{call: add}]\n",
            "defaults.retires (line 2)",
            ["did you mean 'retries'"],
        ),
        (
            "tasks:\n  - call: add\n  - call: add\n    retires: 1\n",
            "tasks[1].retires (line 4)",
            ["'retires'"],
        ),
        ("crawl:\n  seeds: [http://a/]\n  depth: 2\n", "crawl.depth (line 3)", ["unknown key 'depth'"]),
        ("tasks: [{call: add}]\n1: x\n", "1 (line 2)", ["unknown key '1'"]),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, where: str, fragments: list[str]) -> None:
    assert_error(error(tmp_path, text), where, *fragments)


def test_missing_call_names_the_task(tmp_path: Path) -> None:
    exc = error(tmp_path, "tasks:\n  - id: a\n    call: add\n  - id: b\n    args: [1]\n")
    assert_error(exc, "tasks[1].call (line 4)", "missing required key 'call'")


@pytest.mark.parametrize(
    ("task", "where", "fragments"),
    [
        ("{call: add, retries: '3'}", "tasks[0].retries (line 2)", ["expected an integer", "a string ('3')"]),
        ("{call: add, retries: true}", "tasks[0].retries (line 2)", ["expected an integer", "boolean"]),
        ("{call: add, retries: 1.5}", "tasks[0].retries (line 2)", ["expected an integer", "1.5"]),
        ("{call: add, retries: -1}", "tasks[0].retries (line 2)", ["at least 0", "-1"]),
        ("{call: add, timeout: 0}", "tasks[0].timeout (line 2)", ["greater than 0"]),
        ("{call: add, timeout: fast}", "tasks[0].timeout (line 2)", ["expected a number"]),
        ("{call: add, timeout: .inf}", "tasks[0].timeout (line 2)", ["finite"]),
        ("{call: add, timeout: 1000000}", "tasks[0].timeout (line 2)", ["at most 604800, got 1000000"]),
        ("{call: add, priority: 99999999999999999999}", "tasks[0].priority (line 2)", ["at most 2147483648"]),
        ("{call: add, priority: -2147483649}", "tasks[0].priority (line 2)", ["at least -2147483648"]),
        ("{call: add, args: 5}", "tasks[0].args (line 2)", ["expected a list, got an integer (5)"]),
        ("{call: add, args: {a: 1}}", "tasks[0].args (line 2)", ["expected a list, got a mapping"]),
        ("{call: add, kwargs: [1]}", "tasks[0].kwargs (line 2)", ["expected a mapping, got a list"]),
        ("{call: add, kwargs: {1: x}}", "tasks[0].kwargs.1 (line 2)", ["keys must be strings"]),
        ("{call: add, tags: fast}", "tasks[0].tags (line 2)", ["expected a list, got a string"]),
        ("{call: add, tags: [fast, 3]}", "tasks[0].tags[1] (line 2)", ["expected a string, got an integer"]),
        ("{call: add, map: 5}", "tasks[0].map (line 2)", ["expected a list"]),
        ("{call: add, map: {a: 1}}", "tasks[0].map (line 2)", ["list or {$result: ID}, got a mapping"]),
        ("{call: 42}", "tasks[0].call (line 2)", ["expected a string"]),
        ("{call: ''}", "tasks[0].call (line 2)", ["must not be empty"]),
        ("{call: add, retry_on_error: 'no'}", "tasks[0].retry_on_error (line 2)", ["true or false"]),
        ("{call: add, id: 7}", "tasks[0].id (line 2)", ["expected a string"]),
        ("add", "tasks[0] (line 2)", ["expected a mapping, got a string ('add')"]),
    ],
)
def test_wrong_types_in_a_task(tmp_path: Path, task: str, where: str, fragments: list[str]) -> None:
    assert_error(error(tmp_path, f"tasks:\n  - {task}\n"), where, *fragments)


@pytest.mark.parametrize(
    ("text", "where", "fragment"),
    [
        ("tasks: {a: 1}\n", "tasks (line 1)", "expected a list, got a mapping"),
        ("tasks:\n", "tasks (line 1)", "expected a list, got null"),
        ("defaults: [1]\ntasks: [{call: add}]\n", "defaults (line 1)", "expected a mapping, got a list"),
        ("defaults: {timeout: -2}\ntasks: [{call: add}]\n", "defaults.timeout (line 1)", "greater than 0"),
        ("defaults:\n  retries: null\ntasks: [{call: add}]\n", "defaults.retries (line 2)", "got null"),
        ("name: 5\ntasks: [{call: add}]\n", "name (line 1)", "expected a string"),
        ("output: ''\ntasks: [{call: add}]\n", "output (line 1)", "must not be empty"),
    ],
)
def test_wrong_types_elsewhere(tmp_path: Path, text: str, where: str, fragment: str) -> None:
    assert_error(error(tmp_path, text), where, fragment)


def test_args_with_map_is_an_error(tmp_path: Path) -> None:
    exc = error(tmp_path, "tasks:\n  - call: add\n    map: [1, 2]\n    args: [1]\n")
    assert_error(exc, "tasks[0].args (line 4)", "'args'", "'map'")


def test_error_line_reaches_deep_into_lists(tmp_path: Path) -> None:
    text = (
        "tasks:\n"
        + "".join(f"  - call: t{i}\n    args: [{i}]\n" for i in range(30))
        + "  - call: x\n    bad: 1\n"
    )
    assert_error(error(tmp_path, text), "tasks[30].bad (line 63)", "unknown key 'bad'")


# ---------------------------------------------------------------------------------------------- duplicate ids


def test_duplicate_explicit_ids(tmp_path: Path) -> None:
    exc = error(
        tmp_path, "tasks:\n  - {id: a, call: add}\n  - {id: b, call: add}\n  - id: a\n    call: echo\n"
    )
    assert_error(exc, "tasks[2].id (line 4)", "duplicate task id 'a'", "tasks[0]")


def test_explicit_id_clashing_with_a_default_id(tmp_path: Path) -> None:
    exc = error(tmp_path, "tasks:\n  - {id: task-1, call: add}\n  - {call: add}\n")
    assert_error(exc, "tasks[1] (line 3)", "duplicate task id 'task-1'")


def test_explicit_id_clashing_with_a_map_item(tmp_path: Path) -> None:
    exc = error(tmp_path, "tasks:\n  - {id: p, call: fib, map: [1, 2, 3]}\n  - {id: p-2, call: add}\n")
    assert_error(exc, "tasks[1].id (line 3)", "'p-2'", "item 2", "tasks[0]")
    # The clash is found whichever comes first.
    exc = error(tmp_path, "tasks:\n  - {id: p-0, call: add}\n  - {id: p, call: fib, map: [1]}\n")
    assert_error(exc, "tasks[0].id (line 2)", "'p-0'", "tasks[1]")


def test_default_id_clashing_with_a_map_item(tmp_path: Path) -> None:
    exc = error(tmp_path, "tasks:\n  - {id: task, call: fib, map: [1, 2, 3]}\n  - {call: add}\n")
    assert_error(exc, "tasks[1] (line 3)", "'task-1'")


def test_two_maps_with_one_id(tmp_path: Path) -> None:
    exc = error(tmp_path, "tasks:\n  - {id: m, call: fib, map: [1]}\n  - {id: m, call: add, map: [[1, 2]]}\n")
    assert_error(exc, "tasks[1].id (line 3)", "duplicate task id 'm'")


def test_ids_near_a_map_range_do_not_clash(tmp_path: Path) -> None:
    spec = load_job(
        write(
            tmp_path,
            """
            tasks:
              - {id: p, call: fib, map: [1, 2]}
              - {id: p-2, call: add}
              - {id: p-01, call: add}
              - {id: p-x, call: add}
              - {id: p, call: add}
              - {id: p-1-0, call: add}
              - {id: q, call: fib, map: []}
              - {id: q, call: fib, map: [5]}
            """,
        )
    )
    ids = [item.id for item in iter_task_items(spec)]
    assert ids == ["p-0", "p-1", "p-2", "p-01", "p-x", "p", "p-1-0", "q-0"]
    assert len(set(ids)) == len(ids)


def test_crawl_prefix_is_reserved(tmp_path: Path) -> None:
    exc = error(tmp_path, "tasks:\n  - {id: 'crawl:x', call: add}\n")
    assert_error(exc, "tasks[0].id (line 2)", "crawl:")


# ---------------------------------------------------------------------------------------------- crawl errors


@pytest.mark.parametrize(
    ("seeds", "index", "fragment"),
    [
        ("[http://ok/, ftp://example.com/]", 1, "'ftp://example.com/' is not an http(s) URL"),
        ('["file:///etc/passwd"]', 0, "not an http(s) URL"),
        ("[example.com]", 0, "not an http(s) URL"),
        ('["http:///nohost"]', 0, "no valid host"),
        ('["http://exa mple.com/"]', 0, "no valid host"),
        ('["http://a:99999/"]', 0, "invalid port"),
    ],
)
def test_bad_seed_names_its_index(tmp_path: Path, seeds: str, index: int, fragment: str) -> None:
    exc = error(tmp_path, f"crawl:\n  seeds: {seeds}\n")
    assert_error(exc, f"crawl.seeds[{index}] (line 2)", fragment)
    assert len(exc.problems) == 1, str(exc)  # not also a missing 'allow' (it defaults to the seeds' hosts)


@pytest.mark.parametrize(
    ("seeds", "allow", "index", "host"),
    [
        ("[http://127.0.0.1:18001/]", "[127.0.0.3:18003]", 0, "127.0.0.1:18001"),
        ("[http://ok.com/, https://other.com/x]", "[ok.com]", 1, "other.com"),
        ("[http://ok.com:8080/]", "[ok.com]", 0, "ok.com:8080"),
    ],
)
def test_a_seed_outside_allow_is_refused(
    tmp_path: Path, seeds: str, allow: str, index: int, host: str
) -> None:
    exc = error(tmp_path, f"crawl:\n  seeds: {seeds}\n  allow: {allow}\n")
    assert_error(exc, f"crawl.seeds[{index}] (line 2)", f"its host {host} is not in crawl.allow")


def test_a_seed_on_an_allowed_host_by_its_default_port_is_accepted(tmp_path: Path) -> None:
    text = "crawl:\n  seeds: [http://OK.com:80/, https://ok.com/]\n  allow: [ok.com]\n"
    spec = load_job(write(tmp_path, text))
    assert spec.crawl is not None and spec.crawl.allow == ["ok.com"]


@pytest.mark.parametrize(
    ("allow", "index", "fragment"),
    [
        ('["http://127.0.0.1:8000/"]', 0, "not host[:port]"),
        ("[ok.com, 'host:port']", 1, "invalid port"),
        ("['*.example.com']", 0, "not host[:port]"),
        ("['a b']", 0, "not host[:port]"),
    ],
)
def test_bad_allow_entry_names_its_index(tmp_path: Path, allow: str, index: int, fragment: str) -> None:
    exc = error(tmp_path, f"crawl:\n  seeds: [http://ok.com/]\n  allow: {allow}\n")
    assert_error(exc, f"crawl.allow[{index}] (line 3)", fragment)


@pytest.mark.parametrize(
    ("line", "where", "fragment"),
    [
        ("seeds: []", "crawl.seeds (line 2)", "must not be empty"),
        ("allow: []", "crawl.allow (line 3)", "must not be empty"),
        ("max_pages: -1", "crawl.max_pages (line 3)", "at least 0"),
        ("max_depth: deep", "crawl.max_depth (line 3)", "expected an integer"),
        ("per_host_rate: 0", "crawl.per_host_rate (line 3)", "greater than 0"),
        ("robots: 'yes'", "crawl.robots (line 3)", "true or false"),
        ("max_bytes: 0", "crawl.max_bytes (line 3)", "greater than 0"),
        ("timeout: -1", "crawl.timeout (line 3)", "greater than 0"),
        ("user_agent: 5", "crawl.user_agent (line 3)", "expected a string"),
        ("extract: [h1]", "crawl.extract (line 3)", "expected a mapping"),
        ("extract: {h1: 5}", "crawl.extract.h1 (line 3)", "expected a string"),
        ("extract: {h1: 'div >> p'}", "crawl.extract.h1 (line 3)", "not a valid CSS selector"),
        ("extract: {title: h1}", "crawl.extract.title (line 3)", "page record field"),
        ("extract: {changed: h1}", "crawl.extract.changed (line 3)", "page record field"),
        ("state: ''", "crawl.state (line 3)", "must not be empty"),
        ("revisit: changed", "crawl.revisit (line 3)", "needs 'state'"),
        ("sitemaps: 1", "crawl.sitemaps (line 3)", "true or false"),
        ("headers: {X-Token: 5}", "crawl.headers.X-Token (line 3)", "a string or {env: NAME}"),
        (
            "headers: {X-Token: {env: PYRO_TEST_UNSET_VAR}}",
            "crawl.headers.X-Token (line 3)",
            "PYRO_TEST_UNSET_VAR is not set",
        ),
        ("headers: {X-Token: {file: x}}", "crawl.headers.X-Token (line 3)", "a string or {env: NAME}"),
        ("headers: {'bad name': x}", "crawl.headers.bad name (line 3)", "not a header name"),
        ("headers: {Host: x}", "crawl.headers.Host (line 3)", "not a header name"),
        ('headers: {X-A: "a\\nb"}', "crawl.headers.X-A (line 3)", "one line"),
        ("cookies: {session: {env: PYRO_TEST_UNSET_VAR}}", "crawl.cookies.session (line 3)", "is not set"),
        ("cookies: [a]", "crawl.cookies (line 3)", "expected a mapping"),
    ],
)
def test_bad_crawl_settings(tmp_path: Path, line: str, where: str, fragment: str) -> None:
    seeds = "" if line.startswith("seeds") else "  seeds: [http://ok.com/]\n"
    text = f"crawl:\n{seeds}  {line}\n" if seeds else f"crawl:\n  {line}\n"
    assert_error(error(tmp_path, text), where, fragment)


def test_crawl_without_seeds(tmp_path: Path) -> None:
    assert_error(
        error(tmp_path, "crawl:\n  max_pages: 3\n"), "crawl.seeds (line 1)", "missing required key 'seeds'"
    )


# ---------------------------------------------------------------------------------------------- YAML reader

_plain = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
_documents = st.recursive(
    _plain,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(_documents, st.booleans())
def test_fast_reader_agrees_with_pyyaml(document: object, flow: bool) -> None:
    text = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True)
    assert yamlread.read_yaml(text) == yaml.load(text, Loader=yamlread._Loader)


@pytest.mark.parametrize(
    "text",
    [
        "base: &B {a: 1}\nd:\n  <<: *B\n  b: 2\n",
        "s: !!str 123\nb: !!binary aGVsbG8=\n",
        "x: &A [1, 2]\ny: *A\n",
        "n: [0x1f, 012, 1_000, +5, -.inf, ~, Yes, off, '1', 1:30]\n",
        "k: |\n  multi\n  line\n",
    ],
)
def test_fast_reader_handles_yaml_features(text: str) -> None:
    assert yamlread.read_yaml(text) == yaml.load(text, Loader=yamlread._Loader)


def test_a_task_reused_by_alias_gets_an_id_per_entry(tmp_path: Path) -> None:
    spec = load_job(write(tmp_path, "tasks:\n  - &t {call: fib, args: [3]}\n  - *t\n"))
    assert [(item.id, item.args) for item in iter_task_items(spec)] == [("task-0", [3]), ("task-1", [3])]


# ---------------------------------------------------------------------------------------------- hostile files


def test_aliases_that_expand_a_small_file_past_ten_million_values_are_refused_at_once(tmp_path: Path) -> None:
    """The "billion laughs": ten levels of ten aliases read as a kilobyte, and walked as 10**10 values."""
    lines = ["name: laughs", "tasks:", '  - {id: t0, call: echo, args: [&x0 ["lol", "lol"]]}']
    for level in range(1, 11):
        uses = ", ".join([f"*x{level - 1}"] * 10)
        lines.append(f"  - {{id: t{level}, call: echo, args: [&x{level} [{uses}]]}}")
    exc = error(tmp_path, "\n".join(lines) + "\n")
    assert "its aliases expand it to more than 10,000,000 values" in exc.message, str(exc)


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    exc = error(tmp_path, "tasks:\n  - &a {id: a, call: echo, args: [*a]}\n")
    assert "recursive alias" in exc.message, str(exc)


def test_aliases_and_merge_keys_of_an_ordinary_file_still_load(tmp_path: Path) -> None:
    text = "defaults: &d {retries: 1}\ntasks:\n  - &t {id: a, call: add, args: &ab [1, 2]}\n"
    text += "  - {<<: *t, id: b}\n  - {id: c, call: add, args: *ab}\n"
    spec = load_job(write(tmp_path, text))
    assert [(t.id, t.args) for t in spec.tasks] == [("a", [1, 2]), ("b", [1, 2]), ("c", [1, 2])]


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_pipe_or_a_device_is_refused_before_it_is_read(tmp_path: Path, kind: str) -> None:
    import os

    path = tmp_path / "job.yaml"
    if kind == "fifo":
        os.mkfifo(path)  # reading it would wait for a writer forever
    else:
        path = Path("/dev/zero")  # reading it would never end
    with pytest.raises(JobFileError, match="is not a regular file"):
        load_job(path)


@pytest.mark.parametrize("name", ["'../x'", "a/b", "'..'", '"a\\\\b"', '"a\\0b"'])
def test_a_job_name_that_would_put_its_results_file_elsewhere_is_refused(tmp_path: Path, name: str) -> None:
    exc = error(tmp_path, f"name: {name}\ntasks:\n  - {{call: add}}\n")
    assert_error(exc, "name (line 1)", "a job name may not hold")
    assert len(exc.problems) == 1


def test_a_name_that_is_not_a_string_is_one_problem_not_also_a_missing_output(tmp_path: Path) -> None:
    exc = error(tmp_path, "name: 5\ntasks:\n  - {call: add}\n")
    assert_error(exc, "name (line 1)", "expected a string")
    assert len(exc.problems) == 1, str(exc)


@pytest.mark.parametrize("task_id", ["job:on_success", "a:on_failure", "x-1:on_success"])
def test_a_task_id_a_callback_record_would_replace_is_refused(tmp_path: Path, task_id: str) -> None:
    exc = error(tmp_path, f"tasks:\n  - {{id: '{task_id}', call: add}}\non_success: {{call: echo}}\n")
    assert_error(exc, "tasks[0].id (line 2)", "are callbacks")
