"""Workflows through ``submit`` on real processes: values passed, fan-out/fan-in, skipping, callbacks."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrocluster.local import ManagedProcess, start_nameserver, start_worker, stop_processes
from tests.conftest import run_cli, start_submit, status_now, submit_interrupted, wait_for

FLOW_TASKS = str(Path(__file__).parents[1] / "helpers" / "flowtasks.py")
EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """One name server and two workers (2 slots each, the flow test tasks) for the whole module."""
    procs: list[ManagedProcess] = []
    try:
        ns_proc, address = start_nameserver()
        procs.append(ns_proc)
        workers = [
            start_worker(address, ["--concurrency", "2", "--tasks", FLOW_TASKS], wait=False) for _ in range(2)
        ]
        procs.extend(workers)
        for worker in workers:
            worker.wait_ready()
        yield address
    finally:
        stop_processes(list(reversed(procs)), timeout_s=5)


def records_of(path: Path) -> dict[str, dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    return {r["id"]: r for r in lines}


def submit(tmp_path: Path, ns: str, text: str, *args: str) -> tuple[int, dict, dict[str, dict]]:
    job = tmp_path / "job.yaml"
    job.write_text(text)
    result = run_cli("submit", str(job), "--ns", ns, "--json", *args, cwd=tmp_path)
    assert result.returncode in (0, 1), result
    return result.returncode, json.loads(result.stdout), records_of(tmp_path / "job.results.jsonl")


def test_diamond_passes_results_and_starts_each_task_after_its_upstreams(tmp_path, cluster):
    code, summary, records = submit(
        tmp_path,
        cluster,
        """
tasks:
  - {id: a, call: timed_sum, args: [1]}
  - {id: b, call: timed_sum, args: [{$result: a}, 10]}
  - {id: c, call: timed_sum, args: [{$result: a}, 20]}
  - {id: d, call: timed_sum, args: [{$result: b}, {$result: c}]}
""",
    )
    assert code == 0 and summary["ok"] == 4 and summary["total"] == 4, summary
    result = {key: records[key]["result"] for key in "abcd"}
    assert result["d"]["sum"] == 32  # (1 + 10) + (1 + 20)
    assert records["d"]["args"] == [result["b"], result["c"]]  # the record shows the values received
    assert result["b"]["start"] >= result["a"]["end"] and result["c"]["start"] >= result["a"]["end"]
    assert result["d"]["start"] >= max(result["b"]["end"], result["c"]["end"])


def test_dynamic_fan_out_of_50_then_fan_in(tmp_path, cluster):
    code, summary, records = submit(
        tmp_path,
        cluster,
        "tasks:\n"
        f"  - {{id: src, call: echo, args: [{list(range(50))}]}}\n"
        "  - {id: inc, call: add, map: {$result: src}, kwargs: {b: 1}}\n"
        "  - {id: total, call: timed_sum, args: [{$result: inc}], kwargs: {seconds: 0}}\n",
    )
    assert code == 0 and summary["total"] == 52 and summary["ok"] == 52, summary
    assert [records[f"inc-{k}"]["result"] for k in range(50)] == list(range(1, 51))
    assert records["total"]["result"]["sum"] == sum(range(1, 51))


def test_a_failure_mid_graph_skips_every_descendant_at_once(tmp_path, cluster):
    job = tmp_path / "job.yaml"
    job.write_text(
        """
tasks:
  - {id: root, call: echo, args: [1]}
  - {id: bad, call: fail, args: [kaput], needs: [root]}
  - {id: fine, call: add, args: [{$result: root}, 1]}
  - {id: fan, call: add, map: [[1, 1], [2, 2]], kwargs: {}, needs: [bad]}
  - {id: one, call: echo, args: [{$result: fan-1}]}
  - {id: dyn, call: echo, map: {$result: bad}}
  - {id: leaf, call: echo, args: [{$result: fan}], needs: [one, dyn]}
  - {id: slow, call: sleep, args: [2], needs: [fine]}
  - {id: after_slow, call: echo, args: [{$result: slow}]}
"""
    )
    out = tmp_path / "job.results.jsonl"
    proc = start_submit(job, cluster, tmp_path, "--json")
    try:
        wait_for(lambda: out.exists() and "bad" in records_of(out), 30, interval_s=0.01)
        failed_at = time.monotonic()
        descendants = {"fan-0", "fan-1", "one", "dyn", "leaf"}
        wait_for(
            lambda: descendants <= records_of(out).keys(), 1, interval_s=0.01, what="skipped descendants"
        )
        assert time.monotonic() - failed_at < 1
        assert "after_slow" not in records_of(out)  # the other branch is still running
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 1, stderr
    records = records_of(out)
    assert records["bad"]["status"] == "failed"
    reasons = {key: (records[key]["status"], records[key].get("reason")) for key in descendants}
    assert reasons == {
        "fan-0": ("skipped", "upstream bad failed"),
        "fan-1": ("skipped", "upstream bad failed"),
        "one": ("skipped", "upstream fan-1 skipped"),
        "dyn": ("skipped", "upstream bad failed"),
        "leaf": ("skipped", "upstream fan skipped"),
    }
    assert all(records[key]["status"] == "ok" for key in ("root", "fine", "slow", "after_slow"))
    summary = json.loads(stdout)
    assert (summary["ok"], summary["failed"], summary["skipped"], summary["total"]) == (4, 1, 5, 10)


@pytest.mark.parametrize(
    ("tasks", "named"),
    [
        (
            "  - {id: a, call: echo, args: [{$result: b}]}\n  - {id: b, call: echo, needs: [a]}\n",
            "a -> b -> a",
        ),
        ("  - {id: a, call: echo, args: [{$result: nosuch}]}\n", "unknown task id 'nosuch'"),
    ],
)
def test_cycle_or_unknown_id_is_exit_2_and_nothing_runs(tmp_path, tasks, named):
    job = tmp_path / "job.yaml"
    job.write_text("tasks:\n" + tasks)
    result = run_cli("submit", str(job), "--ns", "127.0.0.1:1", cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"error: {job}: tasks[") and named in result.stderr, result.stderr
    assert "(line " in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.jsonl"))


def test_a_callback_no_worker_offers_is_exit_2_before_anything_runs(tmp_path, cluster):
    job = tmp_path / "job.yaml"
    job.write_text("tasks:\n  - {id: a, call: echo, args: [1], on_failure: {call: page_someone}}\n")
    result = run_cli("submit", str(job), "--ns", cluster, cwd=tmp_path)
    assert result.returncode == 2, result
    assert "tasks[0].on_failure.call" in result.stderr and "unknown task 'page_someone'" in result.stderr
    assert not list(tmp_path.glob("*.jsonl"))


def test_callbacks_fire_once_a_failing_callback_is_its_own_failed_line(tmp_path, cluster):
    log = tmp_path / "calls.log"
    code, summary, records = submit(
        tmp_path,
        cluster,
        f"""
defaults:
  on_failure: {{call: mark, args: [default-on-failure, "{log}"]}}
tasks:
  - {{id: good, call: add, args: [1, 2], on_success: {{call: raises}}}}
  - id: flaky
    call: fail
    args: [always]
    retries: 2
    retry_on_error: true
    on_failure: {{call: mark, args: [flaky-on-failure, "{log}"]}}
  - {{id: quiet, call: fail, args: [no callback], on_failure: null}}
on_failure: {{call: mark, args: [job-on-failure, "{log}"]}}
on_success: {{call: mark, args: [job-on-success, "{log}"]}}
""",
    )
    assert code == 1
    assert records["good"]["status"] == "ok" and records["good"]["result"] == 3
    cb = records["good:on_success"]
    assert (cb["kind"], cb["status"], cb["error"]["type"]) == ("callback", "failed", "ValueError")
    assert records["flaky"]["attempts"] == 3 and records["flaky"]["status"] == "failed"
    flaky_cb = records["flaky:on_failure"]
    assert flaky_cb["status"] == "ok" and flaky_cb["args"][-1]["id"] == "flaky"  # the record, appended
    assert flaky_cb["args"][-1]["attempts"] == 3
    assert "quiet:on_failure" not in records
    job_cb = records["job:on_failure"]
    assert job_cb["args"][-1]["failed"] == 3 and job_cb["args"][-1]["name"] == "job"  # the summary
    assert Counter(log.read_text().split()) == {"flaky-on-failure": 1, "job-on-failure": 1}
    assert (summary["total"], summary["ok"], summary["failed"]) == (6, 3, 3), summary


def test_resume_reruns_tasks_skipped_because_of_an_upstream_that_now_succeeds(tmp_path, cluster):
    flag = tmp_path / "flag"
    text = f"""
tasks:
  - {{id: ok1, call: echo, args: [1]}}
  - {{id: gate, call: needs_file, args: ["{flag}"]}}
  - {{id: after, call: add, args: [{{$result: ok1}}, {{$result: ok1}}], needs: [gate]}}
"""
    code, summary, records = submit(tmp_path, cluster, text)
    assert code == 1 and records["after"]["reason"] == "upstream gate failed"
    first_ok1 = records["ok1"]
    flag.touch()
    code, summary, records = submit(tmp_path, cluster, text, "--resume")
    assert code == 0 and records["ok1"] == first_ok1  # kept, not run again
    assert records["gate"]["status"] == "ok" and records["after"]["result"] == 2
    assert (summary["ok"], summary["skipped"], summary["total"]) == (3, 0, 3)


def test_ctrl_c_records_waiting_tasks_cancelled_and_resume_finishes(tmp_path, cluster):
    job = tmp_path / "job.yaml"
    job.write_text(
        "tasks:\n  - {id: slow, call: timed_sum, args: [1], kwargs: {seconds: 30}}\n"
        "  - {id: dyn, call: add, map: {$result: fast}, kwargs: {b: 1}}\n"
        "  - {id: fast, call: echo, args: [[1, 2]], needs: [slow]}\n"
        "  - {id: last, call: echo, args: [{$result: dyn}]}\n"
    )
    code, stdout, stderr = submit_interrupted(
        job, cluster, tmp_path, lambda: not workers_idle(cluster), "--json", what="the slow task running"
    )
    assert code == 130, stderr
    records = records_of(tmp_path / "job.results.jsonl")
    assert {key: r["status"] for key, r in records.items()} == dict.fromkeys(
        ("slow", "dyn", "fast", "last"), "cancelled"
    )
    job.write_text(job.read_text().replace("seconds: 30", "seconds: 0"))
    code, summary, records = submit(tmp_path, cluster, job.read_text(), "--resume")
    assert code == 0 and records["last"]["result"] == [2, 3] and "dyn" not in records, summary


def graph_job(log: Path, cblog: Path, n: int = 200, seed: int = 7) -> str:
    """A layered graph of ``n`` nodes (10 per layer), each after 1-2 nodes of the layer before."""
    rng = random.Random(seed)
    lines = ["tasks:"]
    for i in range(n):
        ups = [] if i < 10 else rng.sample(range((i // 10 - 1) * 10, (i // 10) * 10), rng.randint(1, 2))
        refs = "".join(f", {{$result: n{u}}}" for u in ups)
        lines.append(
            f'  - {{id: n{i}, call: mark, args: [n{i}, "{log}"{refs}],'
            f' on_success: {{call: mark, args: [n{i}, "{cblog}"]}}}}'
        )
    return "\n".join(lines) + "\n"


def workers_idle(ns: str) -> bool:
    # status_now applies the settings first: a TLS test run before in this process leaves Pyro5 on TLS
    status = status_now(ns)
    assert status is not None, f"the name server at {ns} does not answer"
    return bool(status["workers"]) and all(w["busy"] == 0 for w in status["workers"])


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def words(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_sigkill_at_random_points_then_resume_runs_each_node_and_callback_once(tmp_path, cluster):
    log, cblog = tmp_path / "nodes.log", tmp_path / "callbacks.log"
    job = tmp_path / "job.yaml"
    job.write_text(graph_job(log, cblog))
    out = tmp_path / "job.results.jsonl"
    rng = random.Random(11)
    ok_ids: set[str] = set()
    in_doubt: set[str] = set()
    seen_runs = seen_callbacks = 0
    for round_ in range(6):  # five runs killed at a random point, then one to the end
        lines_before = len(lines_of(out))
        target = lines_before + rng.randint(5, 45)
        proc = start_submit(job, cluster, tmp_path, "--quiet", *(("--resume",) if round_ else ()))
        try:
            if round_ < 5:
                wait_for(
                    lambda p=proc, n=target: p.poll() is not None or len(lines_of(out)) >= n,
                    60,
                    interval_s=0.005,
                )
                proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=90)
        finally:
            proc.kill()
            proc.communicate()
        # A fast run may reach its end before the kill lands: then it is the final run.
        assert proc.returncode in ((0,) if round_ == 5 else (0, -signal.SIGKILL)), proc.returncode
        wait_for(lambda: workers_idle(cluster), 30, what="calls under way on the workers finished")
        runs, callbacks = words(log), words(cblog)
        # Nothing recorded ok before this run ran again in it (tasks or callbacks).
        assert not set(runs[seen_runs:]) & ok_ids
        assert not {f"{key}:on_success" for key in callbacks[seen_callbacks:]} & ok_ids
        ok_ids = {key for key, r in records_of(out).items() if r["status"] == "ok"}
        # A callback that ran but was not recorded when submit died may run again (at-least-once).
        in_doubt |= {key for key in callbacks[seen_callbacks:] if f"{key}:on_success" not in ok_ids}
        seen_runs, seen_callbacks = len(runs), len(callbacks)
        if proc.returncode == 0:
            break
    nodes = {f"n{i}" for i in range(200)}
    records = records_of(out)
    assert records.keys() == nodes | {f"{key}:on_success" for key in nodes}
    assert all(r["status"] == "ok" for r in records.values())
    assert len(out.read_text().splitlines()) == 400  # exactly one line per id
    runs_per_callback = Counter(words(cblog))
    assert runs_per_callback.keys() == nodes  # every callback ran...
    twice = {key for key, n in runs_per_callback.items() if n > 1}
    assert twice <= in_doubt, sorted(twice - in_doubt)  # ...once, unless a kill left it unrecorded


def test_pipeline_example_job(tmp_path):
    result = run_cli(
        "submit",
        str(EXAMPLES / "pipeline.yaml"),
        "--local",
        "2",
        "--tasks",
        str(EXAMPLES / "pipeline_tasks.py"),
        "--json",
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result
    records = records_of(tmp_path / "pipeline.results.jsonl")
    assert records["top"]["result"] == [["the", 4], ["dog", 2], ["brown", 1]]
    assert sorted(k for k in records if k.startswith("counts-")) == [f"counts-{k}" for k in range(4)]
    assert records["total:on_success"]["status"] == "ok" and records["job:on_success"]["status"] == "ok"
    assert json.loads(result.stdout)["ok"] == 10


def test_pipeline_example_script_with_futures(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "pipeline.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result
    assert result.stdout.strip() == "[['the', 4], ['dog', 2], ['brown', 1]]", result


def test_resume_runs_again_a_task_whose_call_was_edited_and_feeds_its_new_result_on(tmp_path, cluster):
    text = """
tasks:
  - {id: base, call: add, args: [1, 2]}
  - {id: same, call: echo, args: [{k: [3, 4]}]}
  - {id: after, call: add, args: [{$result: base}, 100]}
"""
    code, _, first = submit(tmp_path, cluster, text)
    assert code == 0 and first["base"]["result"] == 3 and first["after"]["result"] == 103
    edited = text.replace("args: [1, 2]", "args: [20, 22]")
    code, summary, records = submit(tmp_path, cluster, edited, "--resume")
    assert code == 0, summary
    assert records["base"]["result"] == 42 and records["base"]["args"] == [20, 22]
    assert records["after"]["result"] == 142  # fed the new result, not the stale one
    assert records["same"] == first["same"]  # unchanged: kept, not run again


def test_resume_drops_the_callback_lines_a_new_outcome_contradicts(tmp_path, cluster):
    flag, log = tmp_path / "flag", tmp_path / "calls.log"
    text = f"""
tasks:
  - id: gate
    call: needs_file
    args: ["{flag}"]
    on_success: {{call: mark, args: [gate-ok, "{log}"]}}
    on_failure: {{call: mark, args: [gate-failed, "{log}"]}}
  - id: after
    call: echo
    args: [{{$result: gate}}]
    on_success: {{call: mark, args: [after-ok, "{log}"]}}
on_success: {{call: mark, args: [job-ok, "{log}"]}}
on_failure: {{call: mark, args: [job-failed, "{log}"]}}
"""
    out = tmp_path / "job.results.jsonl"
    failed = {"gate", "gate:on_failure", "after", "job:on_failure"}
    for args in ((), ("--resume",)):  # failing again: the failure callbacks ran once, their lines stay
        code, summary, records = submit(tmp_path, cluster, text, *args)
        assert code == 1 and records.keys() == failed and summary["total"] == len(lines_of(out)) == 4
    flag.touch()
    code, summary, records = submit(tmp_path, cluster, text, "--resume")
    assert code == 0 and records["gate"]["status"] == "ok", summary
    assert records.keys() == {"gate", "gate:on_success", "after", "after:on_success", "job:on_success"}
    assert summary["total"] == len(lines_of(out)) == 5
    # Edited to fail: the success lines go (after is skipped: it fired nothing), failure fires again.
    edited = text.replace(f'args: ["{flag}"]', f'args: ["{flag}.gone"]')
    code, summary, records = submit(tmp_path, cluster, edited, "--resume")
    assert code == 1 and records.keys() == failed and records["after"]["status"] == "skipped"
    assert summary["total"] == len(lines_of(out)) == 4
    assert Counter(words(log)) == {
        "gate-failed": 2,
        "job-failed": 2,
        "gate-ok": 1,
        "after-ok": 1,
        "job-ok": 1,
    }


def test_resume_without_its_run_file_refuses_another_jobs_results_and_keeps_its_own(tmp_path, cluster):
    flag = tmp_path / "flag"
    text = f"""
name: mine
tasks:
  - {{id: src, call: echo, args: [[1, 2, 3]]}}
  - {{id: inc, call: add, map: {{$result: src}}, kwargs: {{b: 1}}, on_success: {{call: echo}}}}
  - {{id: gate, call: needs_file, args: ["{flag}"], on_failure: {{call: echo}}}}
on_failure: {{call: echo}}
"""
    job, out, run_file = (
        tmp_path / "mine.yaml",
        tmp_path / "mine.results.jsonl",
        tmp_path / "mine.results.jsonl.run.json",
    )
    job.write_text(text)
    assert run_cli("submit", str(job), "--ns", cluster, "--quiet", cwd=tmp_path).returncode == 1
    first = records_of(out)
    assert {"inc-2:on_success", "gate:on_failure", "job:on_failure"} <= first.keys()
    run_file.unlink()
    before = out.read_text()
    other = tmp_path / "other.yaml"  # shares the id src, and nothing else
    other.write_text("name: other\ntasks:\n  - {id: src, call: echo, args: [[1, 2, 3]]}\n")
    result = run_cli("submit", str(other), "--ns", cluster, "--resume", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2, result
    (line,) = result.stderr.strip().splitlines()
    assert (
        f"{out} was not written by job 'other'" in line and "never writes" in line and "--overwrite" in line
    )
    assert out.read_text() == before and not run_file.exists()
    flag.touch()
    result = run_cli("submit", str(job), "--ns", cluster, "--resume", "--json", cwd=tmp_path)
    assert result.returncode == 0, result
    records = records_of(out)
    assert records["src"] == first["src"] and records["inc-2"] == first["inc-2"]  # kept, not run again
    assert records["gate"]["status"] == "ok" and "gate:on_failure" not in records
