"""Results store: JSON Lines appended and flushed, last line per id wins, torn tails repaired on resume."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from pyrocluster.jobs import results as results_module
from pyrocluster.jobs.results import ResultsStore, encode_or_failure, encode_record


def lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), raw[-80:]
    return [json.loads(line) for line in raw.splitlines()]


def rec(task_id: str, status: str = "ok", **extra: object) -> dict:
    return {"id": task_id, "kind": "compute", "status": status, **extra}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record every os.fsync (the real one still runs)."""
    calls: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(results_module.os, "fsync", fsync)
    return calls


def test_append_writes_compact_flushed_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    store = ResultsStore(path)
    assert store.open(resume=False) == {}
    store.append(rec("a", result={"x": [1, 2]}, text="héllo"))
    # Flushed at once: another reader sees the whole line before close.
    assert (
        path.read_bytes()
        == '{"id":"a","kind":"compute","status":"ok","result":{"x":[1,2]},"text":"héllo"}\n'.encode()
    )
    assert store.close() == 1


def test_close_compacts_last_wins_in_first_seen_order(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    store = ResultsStore(path)
    store.open(resume=False)
    for record in [rec("a", "failed"), rec("b"), rec("a", result=2), rec("c"), rec("b", "skipped")]:
        store.append(record)
    assert store.distinct_ids == 3
    assert len(lines(path)) == 5
    assert store.close() == 3
    assert lines(path) == [rec("a", result=2), rec("b", "skipped"), rec("c")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]  # no temporary file left behind


def test_close_without_compaction_keeps_every_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    store = ResultsStore(path)
    store.open(resume=False)
    for record in [rec("a", "failed"), rec("a")]:
        store.append(record)
    assert store.close(compact=False) == 2
    assert lines(path) == [rec("a", "failed"), rec("a")]
    assert store.close() == 2  # closing again changes nothing


def test_compaction_keeps_the_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    store = ResultsStore(path)
    store.open(resume=False)
    os.chmod(path, 0o640)
    store.append(rec("a", "failed"))
    store.append(rec("a"))
    assert store.close() == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_open_without_resume_empties_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(rec("old")) + "\n")
    store = ResultsStore(path)
    assert store.open(resume=False) == {}
    store.append(rec("new"))
    assert store.close() == 1
    assert lines(path) == [rec("new")]


def test_resume_of_a_missing_file_creates_it(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    store = ResultsStore(path)
    assert store.open(resume=True) == {}
    assert path.exists()
    assert store.close() == 0


def test_missing_directory_is_an_oserror(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "no" / "such" / "r.jsonl")
    with pytest.raises(OSError):
        store.open(resume=False)


def test_resume_returns_only_ok_records_last_wins(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    written = [
        rec("a"),
        rec("b", "failed"),
        rec("a", "failed"),
        rec("c", result=1),
        rec("b"),
        rec("d", "skipped"),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in written))
    store = ResultsStore(path)
    assert store.open(resume=True) == {"c": rec("c", result=1), "b": rec("b")}
    store.append(rec("a", result=3))
    store.append(rec("d"))
    assert store.close() == 4
    assert lines(path) == [rec("a", result=3), rec("b"), rec("c", result=1), rec("d")]


def test_resume_repairs_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    good = (json.dumps(rec("a")) + "\n" + json.dumps(rec("b")) + "\n").encode()
    path.write_bytes(good + b'{"id":"c","kind":"comp')  # the process died mid-write
    store = ResultsStore(path)
    assert set(store.open(resume=True)) == {"a", "b"}
    assert path.read_bytes() == good
    store.append(rec("c"))
    assert store.close() == 3
    assert lines(path) == [rec("a"), rec("b"), rec("c")]


def test_resume_drops_a_complete_object_missing_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    good = (json.dumps(rec("a")) + "\n").encode()
    path.write_bytes(good + json.dumps(rec("b")).encode())
    store = ResultsStore(path)
    assert set(store.open(resume=True)) == {"a"}
    assert path.read_bytes() == good
    store.close()


def test_resume_drops_a_garbled_terminated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    good = (json.dumps(rec("a")) + "\n").encode()
    path.write_bytes(good + b'{"id": "b", "sta\n')
    store = ResultsStore(path)
    assert set(store.open(resume=True)) == {"a"}
    assert path.read_bytes() == good
    store.close()


def test_damage_before_the_last_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    original = b'{"id":"a","status":"ok"}\nnot json\n{"id":"b","status":"ok"}\n'
    path.write_bytes(original)
    with pytest.raises(ValueError, match=r"r\.jsonl:2: not JSON"):
        ResultsStore(path).open(resume=True)
    assert path.read_bytes() == original  # nothing was cut


@pytest.mark.parametrize("line", [b"[1, 2]\n", b'{"status": "ok"}\n', b'{"id": 5}\n'])
def test_lines_that_are_not_records_are_refused(tmp_path: Path, line: bytes) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id":"a","status":"ok"}\n' + line)
    with pytest.raises(ValueError, match=r"r\.jsonl:2: not a results record"):
        ResultsStore(path).open(resume=True)


def test_blank_lines_are_compacted_away(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id":"a","status":"ok"}\n\n')
    store = ResultsStore(path)
    assert set(store.open(resume=True)) == {"a"}
    assert store.close() == 1
    assert path.read_bytes() == b'{"id":"a","status":"ok"}\n'


def test_fsync_at_most_every_interval_and_always_on_close(tmp_path: Path, fsyncs: list[int]) -> None:
    clock = FakeClock()
    store = ResultsStore(tmp_path / "r.jsonl", fsync_interval_s=1.0, clock=clock)
    store.open(resume=False)
    store.append(rec("a"))
    clock.now += 0.5
    store.append(rec("b"))
    assert fsyncs == []
    clock.now += 0.6
    store.append(rec("c"))
    assert len(fsyncs) == 1
    clock.now += 0.9
    store.append(rec("d"))
    assert len(fsyncs) == 1
    store.close(compact=False)
    assert len(fsyncs) == 2


def test_fsync_on_close_and_after_compaction(tmp_path: Path, fsyncs: list[int]) -> None:
    store = ResultsStore(tmp_path / "r.jsonl", fsync_interval_s=3600.0)
    store.open(resume=False)
    store.append(rec("a", "failed"))
    store.append(rec("a"))
    assert fsyncs == []
    assert store.close() == 1
    # The file before compaction, the compacted copy and (on POSIX) the directory holding the rename.
    assert len(fsyncs) >= 2


def test_append_from_many_threads(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    store = ResultsStore(path, fsync_interval_s=0.01)
    store.open(resume=False)

    def work(n: int) -> None:
        for i in range(2000):
            store.append(rec(f"{n}-{i % 1500}", payload="x" * (i % 50)))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(lines(path)) == 16_000
    assert store.close() == 8 * 1500
    assert len({r["id"] for r in lines(path)}) == 8 * 1500


def test_append_needs_an_open_store_and_a_string_id(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.jsonl")
    with pytest.raises(RuntimeError, match="not open"):
        store.append(rec("a"))
    store.open(resume=False)
    with pytest.raises(ValueError, match="'id'"):
        store.append({"status": "ok"})
    with pytest.raises(RuntimeError, match="already open"):
        store.open(resume=False)
    assert store.close() == 0


def test_values_json_lacks_still_make_a_valid_line() -> None:
    line = encode_record(
        {"id": "x", "r": float("nan"), "i": float("-inf"), "b": b"hi", "t": (1, 2), "s": "\udc80"}
    )
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line, parse_constant=lambda name: pytest.fail(f"non-standard constant {name}")) == {
        "id": "x",
        "r": None,
        "i": None,
        "b": {"$base64": "aGk="},
        "t": [1, 2],
        "s": "\udc80",
    }


def test_append_many_writes_what_encode_record_writes(tmp_path: Path) -> None:
    # append_many encodes inline (string keys first, the slower options only when needed): the
    # same bytes as encode_or_failure for every kind of value (a tuple key: a NotRecordable record).
    records = [
        {"id": "a", "result": {"k": [1, 2.5, None, True]}},
        {"id": "b", "result": {1: "int key", "s": {2: [3]}}},
        {"id": "c", "result": {(1, 2): "tuple key"}},
        {"id": "d", "result": b"\x00\xff", "set": {3}},
        {"id": "e", "result": float("nan"), "big": 2**70},
        {"id": "f", "result": "\udc80"},
    ]
    store = ResultsStore(tmp_path / "r.jsonl")
    store.open(resume=False)
    store.append_many(records)
    store.close()
    assert (tmp_path / "r.jsonl").read_bytes() == b"".join(encode_or_failure(r)[1] for r in records)


def test_a_file_of_one_whole_line_that_is_no_record_is_refused_not_emptied(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"this is not json\n")  # someone's notes, not a results file: keep them
    with pytest.raises(ValueError, match=r"r\.jsonl:1: not JSON"):
        ResultsStore(path).open(resume=True)
    assert path.read_bytes() == b"this is not json\n"
    path.write_bytes(b'{"id":"a","kind":"comp')  # the first write cut short: repaired
    store = ResultsStore(path)
    assert store.open(resume=True) == {} and path.read_bytes() == b""
    store.close()
