"""Results store: one JSON object per task outcome, appended as JSON Lines; last line per id wins."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import mmap
import operator
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import orjson

from pyrocluster import codec
from pyrocluster.errors import ConfigError
from pyrocluster.gc_thresholds import paused_collections
from pyrocluster.jobs.recordjson import OPTIONS, default, encode_record
from pyrocluster.jobs.values import BIG_RESULT_BYTES, spill

UNTERMINATED = "line not terminated"
"""What a write cut short by the process's death leaves last."""
DEFAULT_FSYNC_INTERVAL_S = 1.0
"""Seconds between ``os.fsync`` calls while appending (every line is flushed at once regardless)."""


RECORD_KEYS = ("id", "kind", "call", "args", "kwargs", "url", "depth")
"""What a record keeps about its task when its outcome cannot be written."""


def _big(result: Any) -> bool:
    """Whether a result's own JSON exceeds ``BIG_RESULT_BYTES`` (a long line may be long args)."""
    try:
        return len(encode_record({"result": result})) > BIG_RESULT_BYTES
    except (TypeError, ValueError):
        return False


_ID = operator.itemgetter("id")


def _plain_lines(records: list[dict[str, Any]]) -> tuple[bytearray, list[int]] | None:
    """The lines of records that orjson writes as they are, none of them long (the common
    chunk), in one pass with no Python frame per record: the lines and their sizes. None when
    any record needs :meth:`ResultsStore.append_many`'s careful path (an id that is not a
    string, a value orjson refuses, a line long enough that its result may go to a file)."""
    if not records or set(map(type, map(dict.get, records, itertools.repeat("id")))) != {str}:
        return None
    data = bytearray()
    sizes: list[int] = []
    try:
        # default and option passed by position: a partial holding them as keywords copied its
        # dict on every call (0.62 -> 0.42 us a record here)
        for line in map(orjson.dumps, records, itertools.repeat(default), itertools.repeat(OPTIONS)):
            data += line  # copied at once and let go, as append_many does
            sizes.append(len(line))
    except TypeError:
        return None
    return (data, sizes) if max(sizes) <= BIG_RESULT_BYTES else None


def encode_or_failure(record: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """``record`` as a line, or, when it cannot be encoded, a ``failed`` record of the same task.

    A result that JSON cannot hold (a dict with tuple keys under serpent) fails that task alone
    instead of stopping the recording.
    """
    try:
        return record, encode_record(record)
    except Exception as exc:
        failed: dict[str, Any] = {}
        for key in RECORD_KEYS:
            if key in record:
                with contextlib.suppress(Exception):
                    encode_record({key: record[key]})
                    failed[key] = record[key]
        failed["status"] = "failed"
        failed["error"] = {
            "type": "NotRecordable",
            "message": f"the outcome cannot be written as JSON: {type(exc).__name__}: {exc}",
            "traceback": "",
        }
        for key in ("worker", "attempts", "elapsed_ms"):
            failed[key] = record.get(key)
        return failed, encode_record(failed)


class ResultsStore:
    """A results file opened for appending; thread-safe; compacted to one line per id on close.

    The file is locked (``flock``) while open, so a second job cannot write it at the same time.
    A failed write (disk full, permissions) is cut back to the last whole line and raises
    ``OSError``; the store then refuses further writes and is closed without compaction.
    """

    def __init__(
        self,
        path: Path,
        fsync_interval_s: float = DEFAULT_FSYNC_INTERVAL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.fsync_interval_s = fsync_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._offsets: dict[str, int] = {}  # id -> byte offset of its latest line, in first-seen order
        self._lines = 0  # lines in the file, including superseded ones
        self._size = 0
        self._last_sync = 0.0
        self._closed_lines: int | None = None
        self._broken = False
        self.callbacks_read: set[str] = set()
        """Ids of the callback lines ``open(resume=True)`` found (what an earlier run fired)."""

    def open(self, resume: bool) -> dict[str, dict[str, Any]]:
        """Open for appending; with ``resume``, repair a torn last line and return the ``ok`` records by id.

        Without ``resume`` the file is emptied. A missing directory raises ``OSError``; a line that is
        not a JSON object with a string ``id`` anywhere but at the end raises ``ValueError``.
        """
        if self._file is not None:
            raise RuntimeError(f"{self.path} is already open")
        ok: dict[str, dict[str, Any]] = {}
        self._offsets, self._lines, self._size = {}, 0, 0
        self.callbacks_read = set()
        file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise ConfigError(
                f"the results file {self.path} is being written by another running job; "
                "wait for it to end or give another --out"
            ) from None
        try:
            if resume:
                with paused_collections():
                    ok = self._read()
            else:
                os.ftruncate(file.fileno(), 0)
        except BaseException:
            file.close()
            raise
        self._file = file
        self._broken = False
        self._last_sync = self._clock()
        self._closed_lines = None
        return ok

    def _read(self) -> dict[str, dict[str, Any]]:
        ok: dict[str, dict[str, Any]] = {}
        good_end = offset = 0
        bad: tuple[int, str] | None = None
        with open(self.path, "rb") as file:
            for number, line in enumerate(file, 1):
                if bad is not None:  # a bad line followed by more lines is damage, not a torn write
                    raise ValueError(f"{self.path}:{bad[0]}: {bad[1]}")
                start, offset = offset, offset + len(line)
                if not line.endswith(b"\n"):
                    bad = (number, UNTERMINATED)
                    continue
                if not line.strip():
                    self._lines += 1
                    good_end = offset
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    bad = (number, f"not JSON ({exc})")
                    continue
                if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                    raise ValueError(f"{self.path}:{number}: not a results record (an object with an 'id')")
                key = record["id"]
                self._offsets[key] = start
                self._lines += 1
                good_end = offset
                if record.get("status") == "ok":
                    ok[key] = record
                else:
                    ok.pop(key, None)
                if record.get("kind") == "callback":
                    self.callbacks_read.add(key)
        if bad is not None and not self._lines and bad[1] != UNTERMINATED:
            raise ValueError(f"{self.path}:{bad[0]}: {bad[1]}")  # one whole line, and not a record
        if good_end != offset:
            # A torn last line: the process died mid-write. Its task simply runs again.
            os.truncate(self.path, good_end)
        self._size = good_end
        return ok

    def _spilled(self, record: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """A record whose result goes to a file of its own (``values.spill``) and its line; the
        record keeps its value in memory. One whose file cannot be written is ``failed``."""
        try:
            return record, encode_or_failure(spill(record, self.path))[1]
        except (OSError, codec.NotSendable) as exc:
            failed = {k: v for k, v in record.items() if k != "result"}
            failed["status"] = "failed"
            failed["error"] = {
                "type": "NotRecordable",
                "message": f"the result cannot be kept: {exc}",
                "traceback": "",
            }
            return encode_or_failure(failed)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as a line and flush it; fsync at most every ``fsync_interval_s``."""
        self.append_many((record,))

    def append_many(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write records as lines with one write; return them as written (see :func:`encode_or_failure`)."""
        records = records if isinstance(records, list) else list(records)
        plain = _plain_lines(records)
        if plain is not None:
            self._commit(plain[0], map(_ID, records), plain[1])
            return records
        keys: list[str] = []
        sizes: list[int] = []
        written: list[dict[str, Any]] = []
        data = bytearray()
        dumps = orjson.dumps
        for record in records:
            key = record.get("id")
            if not isinstance(key, str):
                raise ValueError("a results record needs a string 'id'")
            try:  # encode_record's hot path inline: this loop runs once per outcome
                line = dumps(record, default=default, option=OPTIONS)
            except TypeError:  # what orjson cannot write: encode_record's careful path
                record, line = encode_or_failure(record)
            if len(line) > BIG_RESULT_BYTES and "result" in record and _big(record["result"]):
                record, line = self._spilled(record)
            written.append(record)  # with its value in memory, for what follows from it
            keys.append(key)
            sizes.append(len(line))
            # Copied at once and let go: the next line reuses its memory. Keeping thousands of
            # orjson's bytes alive until a join made every line cost three times as much.
            data += line
        self._commit(data, keys, sizes)
        return written

    def _commit(self, data: bytearray, keys: Iterable[Any], sizes: list[int]) -> None:
        """Write the lines of ``data`` (one per key, of ``sizes`` bytes) and index them."""
        with self._lock:
            if self._file is None:
                raise RuntimeError(f"{self.path} is not open")
            if self._broken:
                raise OSError(f"{self.path}: an earlier write failed")
            self._write(data)
            starts = list(itertools.accumulate(sizes, initial=self._size))  # each line's offset, then the end
            self._offsets.update(zip(keys, starts[:-1], strict=True))
            self._size = starts[-1]
            self._lines += len(sizes)
            now = self._clock()
            if now - self._last_sync >= self.fsync_interval_s:
                os.fsync(self._file.fileno())
                self._last_sync = now

    def _write(self, data: bytes | bytearray) -> None:
        """Write all of ``data`` or, on failure, cut the file back to its last whole line and raise."""
        assert self._file is not None
        view = memoryview(data)
        try:
            while view:
                written = self._file.write(view)
                view = view[written or 0 :]
        except OSError:
            self._broken = True
            with contextlib.suppress(OSError):
                os.ftruncate(self._file.fileno(), self._size)
            raise

    def has(self, key: str) -> bool:
        """True when the open file holds a line for ``key``."""
        with self._lock:
            return key in self._offsets

    def statuses(self, keys: Iterable[str]) -> dict[str, Any]:
        """The ``status`` of the latest line of each of ``keys`` that the open file holds."""
        out: dict[str, Any] = {}
        with self._lock:
            if self._file is None or not self._size:
                return out
            with open(self.path, "rb") as src, mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as data:
                for key in keys:
                    start = self._offsets.get(key)
                    if start is not None:
                        record = orjson.loads(data[start : data.find(b"\n", start) + 1])
                        out[key] = record.get("status")
        return out

    def forget(self, key: str) -> None:
        """Drop ``key``'s line at compaction (a dynamic map's own line once it has items instead)."""
        with self._lock:
            self._offsets.pop(key, None)

    @property
    def distinct_ids(self) -> int:
        """Number of distinct ids in the open file."""
        return len(self._offsets)

    def close(self, compact: bool = True) -> int:
        """Fsync and close; with ``compact``, rewrite to one line per id (last wins); return the lines."""
        with self._lock:
            if self._file is None:
                if self._closed_lines is None:
                    raise RuntimeError(f"{self.path} was never opened")
                return self._closed_lines
            with contextlib.suppress(OSError):  # a full disk: what was written is already valid
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            if compact and not self._broken and self._lines != len(self._offsets):
                self._compact()
                self._lines = len(self._offsets)
            self._closed_lines = self._lines
            self._offsets, self._lines, self._size = {}, 0, 0
            return self._closed_lines

    def _compact(self) -> None:
        # Copy the winning lines into a temporary file and rename it over the original, so that a
        # crash at any point leaves either the old file or the new one, both valid JSON Lines.
        directory = self.path.parent
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with open(fd, "wb") as out, open(self.path, "rb") as src:
                if self._size:
                    with mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as data:
                        for start in self._offsets.values():
                            out.write(data[start : data.find(b"\n", start) + 1])
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp_name, stat.S_IMODE(os.stat(self.path).st_mode))
            os.replace(tmp_name, self.path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
