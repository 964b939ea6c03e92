"""The big results a worker keeps for the calls that will receive them (thread-safe).

Each value is the encoded bytes of one call's result (``codec.pack``), kept in memory while the
store holds at most ``memory_bytes`` in all; beyond that the oldest ones go to files of their own
in the worker's temporary folder (spilled), read back in chunks. A value is freed when its job
says so (``free``, at the job's end or when its last consumer ran), or once nobody read it for
``idle_s`` (a coordinator that died leaves nothing behind for ever). The clock is injected.

A coordinator may also put a value here, a chunk at a time (``begin``, ``add``, ``finish``): how
``submit --resume`` hands a value read back from its results file to the worker that needs it.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MEMORY_BYTES = 1 << 30
"""Kept values held in memory at most, in all; older ones are spilled to disk."""
IDLE_S = 6 * 3600.0
"""A value nobody read or freed for this long is dropped."""
MAX_UPLOADS = 4
"""Values being put at once (each holds a buffer of its full size)."""
UPLOAD_IDLE_S = 120.0
"""An unfinished put that received nothing for this long is dropped."""


class PutRefused(ValueError):
    """A put that does not fit the store's limits, or is not the one its id names."""


@dataclass
class _Upload:
    """A value being put: its buffer and how much of it arrived."""

    owner: str
    buffer: bytearray
    used_at: float
    received: int = 0


@dataclass
class Kept:
    """One kept value: in memory (``data``) or spilled (``path``)."""

    size: int
    sha256: str
    owner: str
    used_at: float
    data: bytes | bytearray | memoryview | None = None
    path: Path | None = None


class ValueStore:
    """Values by id, newest last; the memory ones first to be spilled are the oldest."""

    def __init__(
        self,
        memory_bytes: int = MEMORY_BYTES,
        idle_s: float = IDLE_S,
        folder: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.memory_bytes = memory_bytes
        self.idle_s = idle_s
        self._folder = folder
        self._own_folder = folder is None
        self._clock = clock
        self._lock = threading.Lock()
        self._values: OrderedDict[str, Kept] = OrderedDict()
        self._in_memory = 0
        self._uploads: dict[str, _Upload] = {}

    def keep(self, data: bytes | bytearray | memoryview, owner: str) -> tuple[str, str]:
        """Keep ``data`` for coordinator ``owner``: its ``(id, sha256)``."""
        digest = hashlib.sha256(data).hexdigest()
        value_id = secrets.token_hex(16)
        now = self._clock()
        with self._lock:
            self._drop_idle(now)
            self._values[value_id] = Kept(len(data), digest, owner, now, data=data)
            self._in_memory += len(data)
            spill = self._over_bound()
        for kept in spill:
            self._spill(kept)
        return value_id, digest

    # -- values put a chunk at a time ----------------------------------------------------------

    def begin(self, owner: str, size: int) -> str:
        """Start putting a value of ``size`` bytes for ``owner``: the id of the put."""
        now = self._clock()
        with self._lock:
            for key in [k for k, u in self._uploads.items() if now - u.used_at > UPLOAD_IDLE_S]:
                del self._uploads[key]
            if len(self._uploads) >= MAX_UPLOADS:
                raise PutRefused(f"{MAX_UPLOADS} values are being put here already")
        upload_id = secrets.token_hex(16)
        upload = _Upload(owner, bytearray(size), now)  # allocated outside the lock
        with self._lock:
            self._uploads[upload_id] = upload
        return upload_id

    def add(self, upload_id: str, owner: str, offset: int, chunk: bytes) -> int:
        """Write the next ``chunk`` of a put (in order, from ``offset``): the bytes received."""
        upload = self._upload(upload_id, owner)
        with self._lock:
            end = offset + len(chunk)
            if offset != upload.received or end > len(upload.buffer):
                raise PutRefused(f"a chunk at {offset} of {len(chunk)} bytes: {upload.received} received")
            upload.received = end  # claimed before the copy: a second writer at this offset is refused
            upload.used_at = self._clock()
        memoryview(upload.buffer)[offset:end] = chunk
        return end

    def finish(self, upload_id: str, owner: str, sha256: str) -> tuple[str, str]:
        """Keep a put whose every byte arrived and whose sha256 is ``sha256``: its ``(id, sha256)``."""
        upload = self._upload(upload_id, owner)
        with self._lock:
            self._uploads.pop(upload_id, None)
        if upload.received != len(upload.buffer):
            raise PutRefused(f"{upload.received} of {len(upload.buffer)} bytes were put")
        value_id, digest = self.keep(upload.buffer, owner)
        if digest != sha256:
            self.free(owner, [value_id])
            raise PutRefused("the bytes put are not the value announced (sha256 differs)")
        return value_id, digest

    def _upload(self, upload_id: str, owner: str) -> _Upload:
        with self._lock:
            upload = self._uploads.get(upload_id)
        if upload is None or upload.owner != owner:
            raise PutRefused("no such value being put")
        return upload

    def _over_bound(self) -> list[Kept]:
        """The oldest in-memory values to spill until the rest fit (lock held)."""
        out: list[Kept] = []
        excess = self._in_memory - self.memory_bytes
        for kept in self._values.values():
            if excess <= 0:
                break
            if kept.data is not None and kept.path is None:
                out.append(kept)
                excess -= kept.size
        return out

    def _spill(self, kept: Kept) -> None:
        """Write one value to its file, then let its memory go (readers see one or the other)."""
        data = kept.data
        if data is None:
            return
        folder = self._spill_folder()
        path = folder / secrets.token_hex(12)
        with open(path, "wb") as out:
            out.write(data)
        with self._lock:
            if kept.data is None:  # freed meanwhile
                path.unlink(missing_ok=True)
                return
            kept.path = path
            kept.data = None
            self._in_memory -= kept.size

    def _spill_folder(self) -> Path:
        with self._lock:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="pyrocluster-values-"))
            self._folder.mkdir(parents=True, exist_ok=True)
            return self._folder

    def info(self, value_id: str) -> Kept | None:
        """The kept value, marked as used now; None when it is not (or no longer) here."""
        with self._lock:
            kept = self._values.get(value_id)
            if kept is not None:
                kept.used_at = self._clock()
            return kept

    def read(self, value_id: str, offset: int, size: int) -> bytes | None:
        """Up to ``size`` bytes of a value from ``offset``; None when it is not here."""
        kept = self.info(value_id)
        if kept is None:
            return None
        data = kept.data
        if data is not None:
            return bytes(memoryview(data)[offset : offset + size])
        assert kept.path is not None
        try:
            with open(kept.path, "rb") as file:
                file.seek(offset)
                return file.read(size)
        except FileNotFoundError:  # freed while we read
            return None

    def whole(self, value_id: str) -> bytes | bytearray | memoryview | None:
        """A value's bytes (read from its file when spilled); None when it is not here."""
        kept = self.info(value_id)
        if kept is None:
            return None
        if kept.data is not None:
            return kept.data
        assert kept.path is not None
        try:
            return kept.path.read_bytes()
        except FileNotFoundError:
            return None

    def free(self, owner: str, value_ids: list[str] | None = None) -> int:
        """Drop ``owner``'s values (those named, or all of them); how many were here."""
        with self._lock:
            if value_ids is None:
                chosen = [k for k, v in self._values.items() if v.owner == owner]
            else:
                chosen = [k for k in value_ids if k in self._values and self._values[k].owner == owner]
            dropped = [self._pop(k) for k in chosen]
        for kept in dropped:
            if kept.path is not None:
                kept.path.unlink(missing_ok=True)
        return len(dropped)

    def _pop(self, value_id: str) -> Kept:
        kept = self._values.pop(value_id)
        if kept.data is not None:
            self._in_memory -= kept.size
            kept.data = None
        return kept

    def _drop_idle(self, now: float) -> None:
        """Forget values unused for ``idle_s`` (lock held; their files are removed here too)."""
        idle = [k for k, v in self._values.items() if now - v.used_at > self.idle_s]
        for value_id in idle:
            kept = self._pop(value_id)
            if kept.path is not None:
                kept.path.unlink(missing_ok=True)

    def usage(self) -> tuple[int, int, int]:
        """``(values, bytes in memory, bytes spilled)``."""
        with self._lock:
            spilled = sum(v.size for v in self._values.values() if v.path is not None)
            return len(self._values), self._in_memory, spilled

    def close(self) -> None:
        """Forget everything: spilled files are removed, and the folder when this store made it."""
        with self._lock:
            dropped = [self._pop(k) for k in list(self._values)]
            self._uploads.clear()
            folder = self._folder
        for kept in dropped:
            if kept.path is not None:
                kept.path.unlink(missing_ok=True)
        if folder is not None and self._own_folder:
            shutil.rmtree(folder, ignore_errors=True)
