"""``--resume``: a kept result left in its file is put on a worker once, when a call first receives
it, the call getting the reference; a put value lost with its worker is put again."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pyrocluster.config import Settings
from pyrocluster.errors import TaskFailed
from pyrocluster.jobs import keptfiles
from pyrocluster.jobs.bigvalues import JobValues, new_call
from pyrocluster.jobs.items import TaskItem
from pyrocluster.jobs.keptfiles import KeptFile
from pyrocluster.jobs.records import respelled
from pyrocluster.jobs.spec import JobSpec
from pyrocluster.jobs.values import spill
from pyrocluster.valueref import ValueRef


class FakeCluster:
    settings = Settings()
    sender_id = "coordinator-1"

    def __init__(self) -> None:
        self.submitted: list = []

    def submit_calls(self, calls) -> None:
        self.submitted += list(calls)


def _spec(yaml_tasks: list[dict]) -> JobSpec:
    return JobSpec.model_validate({"name": "job", "output": "job.results.jsonl", "tasks": yaml_tasks})


def test_kept_files_stay_on_disk_but_where_the_coordinator_needs_the_value(tmp_path):
    out = tmp_path / "job.results.jsonl"
    big, small = np.arange(300_000.0), np.arange(1000.0)
    kept = {
        "make": spill({"id": "make", "kind": "compute", "status": "ok", "result": big}, out),
        "items": spill(
            {"id": "items", "kind": "compute", "status": "ok", "result": list(range(300_000))}, out
        ),
        "tiny": spill({"id": "tiny", "kind": "compute", "status": "ok", "result": small}, out),
        "gone": spill({"id": "gone", "kind": "compute", "status": "ok", "result": big + 1}, out),
    }
    Path(tmp_path / kept["gone"]["result"]["$file"]).write_bytes(b"changed")
    spec = _spec(
        [
            {"id": "make", "call": "echo"},
            {"id": "items", "call": "echo"},
            {"id": "tiny", "call": "echo"},
            {"id": "gone", "call": "echo"},
            {"id": "each", "call": "echo", "map": {"$result": "items"}},
        ]
    )
    references = {key: record["result"] for key, record in kept.items()}
    spelled: dict[int, object] = {}
    files = keptfiles.read_kept(kept, out, spec, spelled)
    assert [f.task_id for f in files] == ["make"] and type(kept["make"]["result"]) is KeptFile
    assert kept["items"]["result"] == list(range(300_000))  # a dynamic map's source: read whole
    assert np.array_equal(kept["tiny"]["result"], small)  # small: read whole
    assert "gone" not in kept  # changed: it runs again
    assert spelled == {id(kept[k]["result"]): references[k] for k in ("make", "items", "tiny")}


def test_a_kept_file_is_put_once_and_put_again_when_lost(tmp_path, monkeypatch):
    puts: list[str] = []

    def put(kept, call, settings, owner):
        puts.append(call.name)
        ref = ValueRef(f"{len(puts):032x}", "w1", "PYRO:x@127.0.0.1:1", 10, "0" * 64, kept.task_id)
        ref.file = kept.reference
        return ref

    monkeypatch.setattr(keptfiles, "put", put)
    cluster = FakeCluster()
    values = JobValues(cluster, tmp_path / "job.results.jsonl", lambda calls: None)  # type: ignore[arg-type]
    reference = {"$file": "job.results.jsonl.values/make.npy", "type": "ndarray", "bytes": 9, "sha256": "a"}
    kept = KeptFile("make", tmp_path / "make.npy", "ndarray", reference)
    values._kept_files = values.seen = True
    spelled = {id(kept): reference}
    item = TaskItem("total", "array_sum", [kept], {}, (), 60.0, 0, False)
    first = values.prepare(new_call(item, None, item), item)
    second_item = item._replace(id="other", args=[{"v": kept}])
    second = values.prepare(new_call(second_item, None, second_item), second_item)
    ref = first.args[0]
    assert type(ref) is ValueRef and ref.source == "make" and ref.file == reference
    assert first.refs == (ref,) and first.tag.args == [ref]  # the record's item too
    assert second.args == [{"v": ref}] and puts == ["array_sum"]  # one put for both
    assert respelled([{"args": first.tag.args, "kwargs": {}}], spelled)[0]["args"][0] is ref
    first.error = TaskFailed("ValueGone", f"value {ref.id} of 10 bytes held by worker w1 is gone: x")
    assert values.ready([first]) == []  # not recorded: sent again with the value put again
    [again] = cluster.submitted
    assert puts == ["array_sum", "array_sum"] and again.args[0].id != ref.id
    assert again.tag.id == "total" and again.refs == (again.args[0],)
    assert values.remade == 1
