"""What a worker shares with one of its slot processes: the progress of the batch in it, a cancel
flag per call, and a log of the outcomes finished so far.

The slot process appends each outcome to the log as its call ends (a copy into shared memory: no
message, no system call), so the worker has every finished outcome however the process ends: the
timer's exit after an overrun, a kill at the fallback deadline of a task that holds the
interpreter lock in C, a kill for a cancel, a crash. The index of the call in progress and the
cancel flags are read and written under one lock (a semaphore in shared memory, about 0.5 us a
call): a call cancelled before it starts is skipped by the slot process, never started and then
killed. The worker kills a slot process only while it holds that lock, so the process never dies
holding it.

A big result is packed straight into the log (:meth:`SlotShare.place` offers the room; ``codec.pack``
writes the packed value there) rather than packed into a new buffer and copied in: one 256 MiB pass
and 256 MiB of the slot process's peak memory fewer (figures in ``handoff.py``).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import reduction
from typing import Any

import msgpack

from pyrocluster import bigbuffers
from pyrocluster.slots.batch import Outcome

INDEX, START, LOGGED, USED, TIMED_OUT, MODE, WANTED, TIMEOUT_S, PORT, WATCHING, TOLD, REVOKED_AT, ENDED = (
    range(13)
)
"""Fields of ``progress``: the call last started, its start (monotonic), outcomes logged, log bytes
used, and 1.0 once the slot's timer ended the process for an overrun; then the direct path's
(``direct.py``): the slot's mode, 1.0 when the worker wants it back after its direct calls, the
timeout of each of them (seconds), the slot's port, 1.0 while the worker watches direct calls' deadlines,
messages the slot process sent on its pipe between batches, the version of the revocations
written for the slot, and the bytes of the records of ended direct calls not read yet."""
HELD, LENT, DIRECT = 0.0, 1.0, 2.0
"""Modes of a slot: the worker's (idle or running a batch), lent to direct calls, running one."""
_WHO_BYTES = 64 * 1024
"""Room for the direct calls in progress: ``[sender, call_id, task]`` of a lone call, and the ids
of a batch's calls after those of its first (``[sender, first_id, task, ids]``)."""
ENDED_BYTES = 1024 * 1024
"""Room for the records of ended direct calls (a batch's is about 10 bytes a call: a 2,048-call
batch's 20 KiB). A record that finds it full is not counted, so it is far bigger than what the
slot writes before it asks the worker to read them (``ENDED_TELL_BYTES``): a worker slow to wake
under load has some 50 batches' time to do so."""
ENDED_TELL_BYTES = 64 * 1024
"""Past this much of records the slot asks the worker to read them (a message on its pipe), so
the worker is not woken for every call."""
_REVOKED_AT = _WHO_BYTES + ENDED_BYTES
DIRECT_INFO_BYTES = _REVOKED_AT + 48 * 1024
"""Room for the direct calls in progress, the records of those that ended, and the revocations."""
_LEN = struct.Struct(">I")
LOCK_WAIT_S = 1.0
"""The slot process holds the lock for microseconds; a worker that waits this long for it goes on
without it (the process died holding it, killed from outside)."""
SKIPPED_BYTES = 16
"""Log bytes of one skipped call's outcome, which the reply budget does not count."""
KEEP_LOG_BYTES = 1 << 20
"""Log memory kept after a batch; pages past it are given back (a batch of large results)."""


BIG_VALUE_BYTES = 1 << 20
"""An outcome value at least this big is written into the log without being packed first."""

_HEAD = struct.Struct(">BI")
_BIG_REF = 1
"""The extension code of a big value's place in the memory (offset, size), in the log only."""
_REF = struct.Struct(">QQ")
_ARRAY32 = 0xDD
"""msgpack's type byte of an array with a 32-bit count."""


def _outcome_packer() -> msgpack.Packer:
    """A packer of outcomes ``[kind, bytes or None, float]``: plain msgpack, no hook needed."""
    return msgpack.Packer(use_bin_type=True)


def anonymous_file(size: int) -> int:
    """A file descriptor of ``size`` bytes of memory (a memfd, not bound by a small /dev/shm)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("pyrocluster-slot", os.MFD_CLOEXEC)
    else:  # pragma: no cover - platforms without memfd
        fd, path = tempfile.mkstemp(prefix="pyrocluster-slot-")
        os.unlink(path)
    os.ftruncate(fd, size)  # sparse: pages are taken only when written
    return fd


class _Memory:
    """A shared mapping of an anonymous file; it travels to a slot process as a duplicated fd."""

    def __init__(self, size: int, fd: int = -1) -> None:
        self.size = size
        self.fd = anonymous_file(size) if fd < 0 else fd
        self.map = mmap.mmap(self.fd, size)

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_memory, (self.size, reduction.DupFd(self.fd))

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


def _rebuild_memory(size: int, dup: Any) -> _Memory:
    return _Memory(size, dup.detach())


class _BigValue:
    """Where a big outcome value lies in the memory; read out with ``preadv``, which copies it
    without holding the interpreter lock (a 300 MiB copy holds it for a second on a loaded
    machine: the worker's other threads, its probes among them, would wait)."""

    __slots__ = ("offset", "size")

    def __init__(self, offset: int, size: int) -> None:
        self.offset, self.size = offset, size

    @classmethod
    def of(cls, code: int, data: bytes) -> _BigValue:
        if code != _BIG_REF or len(data) != _REF.size:
            raise ValueError(f"unexpected extension {code} in a slot's log")
        return cls(*_REF.unpack(data))

    def read(self, fd: int) -> bytes | bytearray:
        body, view = bigbuffers.allocate(self.size)
        with view:
            got = 0
            while got < self.size:
                n = os.preadv(fd, [view[got:]], self.offset + got)
                if n <= 0:
                    raise OSError(f"a slot's log ends {self.size - got} bytes into a value")
                got += n
        return body


class SlotShare:
    """The shared state of one slot process (made by the worker, handed to the process at its start).

    Layout of the memory: ``max_calls`` cancel flags (one byte per call of the batch), the head of
    the log (a msgpack array header the worker writes once it knows the count, so one ``unpackb``
    reads the whole log), then the outcomes, msgpack-ed one after another: room for ``log_bytes``
    of outcomes as the reply budget counts them (each at least 16 bytes more than its packed size),
    and for skipped calls, which it does not count.
    """

    def __init__(self, ctx: Any, max_calls: int, log_bytes: int) -> None:
        self.progress = ctx.RawArray("d", 13)
        self._lock = ctx.Lock()
        self._info = _Memory(DIRECT_INFO_BYTES)
        """The direct call in progress (``[sender, call_id, task]``), then the revocations."""
        self._memory = _Memory(max_calls + _HEAD.size + log_bytes + max_calls * SKIPPED_BYTES)
        self._head = max_calls
        self._start = max_calls + _HEAD.size
        self._used = self._start  # the slot process's write position in the log
        self._writer = False  # the slot process's side is set up (by its first restart)
        self.log_bytes = log_bytes

    # -- the slot process -------------------------------------------------------------------

    def restart(self) -> None:
        """A batch begins (in the slot process): its outcomes are logged from the start."""
        self._used = self._start
        self._top = self._memory.size  # big values are written downwards from here
        self._placed: memoryview | None = None  # the view place() gave last, until recorded
        self._logged = 0
        if not self._writer:  # made here, in the slot process: a packer does not travel
            self._writer = True
            self._map = self._memory.map
            self._pack: Callable[[Outcome], bytes] = _outcome_packer().pack
            # the progress as a memoryview of doubles: a store is 28 ns, 73 through ctypes, and a
            # call makes four (the same 8-byte stores, in the same order)
            self._progress = memoryview(self.progress).cast("B").cast("d")

    def begin(self, position: int, at: float) -> bool:
        """Call ``position`` starts at ``at``; False (and it does not start) when it was cancelled."""
        lock, progress = self._lock, self._progress
        lock.acquire()
        if self._map[position]:
            lock.release()
            return False
        progress[START] = at  # the start first: a reader that sees the new index never sees an older start
        progress[INDEX] = position
        lock.release()
        return True

    def place(self, size: int) -> memoryview | None:
        """Room for a big outcome value of ``size`` bytes below those logged before it, for the
        call's result to be packed straight into (``codec.pack``); None when there is none.
        Logged by :meth:`record` without a copy when that value is its outcome's."""
        top = self._top - size
        if size < BIG_VALUE_BYTES or top < self._used:
            return None
        self._placed = memoryview(self._map)[top : self._top]
        return self._placed

    def record(self, outcome: Outcome) -> None:
        """Log the outcome of the next call (finished or skipped)."""
        value = outcome[1]
        if value is not None and len(value) >= BIG_VALUE_BYTES:
            outcome = self._referenced(outcome)
        data = self._pack(outcome)
        used = self._used
        end = self._used = used + len(data)
        self._map[used:end] = data
        logged = self._logged = self._logged + 1
        progress = self._progress
        progress[USED] = end  # the bytes before the count: a counted outcome is always whole
        progress[LOGGED] = logged

    def _referenced(self, outcome: Outcome) -> Outcome:
        """A big outcome with its value's body below the big values logged before it, at the far
        end of the memory, and a reference in its place: the worker reads it out without the
        interpreter lock. A value :meth:`place` offered room for is there already (no copy)."""
        value, placed = outcome[1], self._placed
        if placed is not None and value is placed:
            self._placed = None
        else:
            top = self._top - len(value)
            self._map[top : self._top] = value
        self._top -= len(value)
        return [outcome[0], msgpack.ExtType(_BIG_REF, _REF.pack(self._top, len(value))), outcome[2]]

    def timed_out(self) -> None:
        """The call in progress overran and the timer ends the process."""
        self.progress[TIMED_OUT] = 1.0

    # -- the worker -------------------------------------------------------------------------

    def reset(self) -> None:
        """Before a batch is sent: no call started, nothing logged (the process is idle). The log's
        end is read only under a count above 0, and the overrun mark only of a process that ended."""
        progress = self.progress
        progress[LOGGED] = 0.0
        progress[INDEX] = -1.0

    def running(self) -> int:
        """The index of the call in progress, -1 for none (started and not logged)."""
        progress = self.progress
        index = int(progress[INDEX])
        return index if index >= 0 and int(progress[LOGGED]) == index else -1

    def logged_count(self) -> int:
        """How many outcomes the slot process has logged in this batch."""
        return int(self.progress[LOGGED])

    def started_at(self) -> float:
        """When the call last started began (read after its index: never older than it)."""
        return float(self.progress[START])

    def was_timed_out(self) -> bool:
        """The timer ended the process for an overrun."""
        return self.progress[TIMED_OUT] == 1.0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        got = self._lock.acquire(timeout=LOCK_WAIT_S)
        try:
            yield
        finally:
            if got:
                self._lock.release()

    def flag(self, positions: Iterable[int]) -> None:
        """Flag these calls cancelled: the slot process skips each when it comes to start it."""
        flags = self._memory.map
        for j in positions:
            flags[j] = 1

    def flag_off(self, positions: Iterable[int]) -> None:
        """Clear these calls' cancel flags (after their batch)."""
        flags = self._memory.map
        for j in positions:
            flags[j] = 0

    def cancel(self, positions: set[int], kill: Callable[[], None]) -> None:
        """Flag these calls cancelled; ``kill()`` the process when one of them is in progress."""
        with self._locked():
            self.flag(positions)
            if self.running() in positions:
                kill()

    def kill_if_running(self, position: int, kill: Callable[[], None]) -> bool:
        """``kill()`` the process if call ``position`` is still in progress; True if it was."""
        with self._locked():
            if self.running() != position:
                return False
            kill()
            return True

    def finished(self) -> list[Outcome]:
        """The outcomes logged (read once the batch ended or the process is dead)."""
        count, used = self.logged_count(), int(self.progress[USED])
        if count == 0:
            return []
        log = self._memory.map
        _HEAD.pack_into(log, self._head, _ARRAY32, count)
        big: list[_BigValue] = []  # only a log with a big value is gone through outcome by outcome

        def referenced(code: int, data: bytes) -> _BigValue:
            big.append(_BigValue.of(code, data))
            return big[-1]

        with memoryview(log) as whole, whole[self._head : used] as part:
            try:
                outcomes: list[Outcome] = msgpack.unpackb(part, raw=False, ext_hook=referenced)
            except msgpack.ExtraData as extra:  # killed between an outcome's bytes and its count
                outcomes = extra.unpacked
        if big:
            for outcome in outcomes:
                if type(outcome[1]) is _BigValue:
                    outcome[1] = outcome[1].read(self._memory.fd)
        return outcomes

    def recycle(self, flagged: Iterable[int]) -> None:
        """After a batch, in an idle process: clear its cancel flags, give back a large log's pages."""
        if flagged:
            self.flag_off(flagged)
        used = int(self.progress[USED])
        keep = self._start + KEEP_LOG_BYTES
        if used > keep and hasattr(mmap, "MADV_REMOVE"):
            keep -= keep % mmap.PAGESIZE
            self._memory.map.madvise(mmap.MADV_REMOVE, keep, self._memory.size - keep)

    def close(self) -> None:
        """Unmap (the worker's side, once its process is gone)."""
        self._memory.close()
        self._info.close()

    # -- the direct path (``direct.py``): who runs the slot, and the call it runs ----------------

    def claim(self, who: list[Any], timeout_s: float, now: float) -> bool:
        """(The slot process) take the lent slot for direct calls (``who``: :data:`_WHO_BYTES`),
        each of ``timeout_s``, the first started at ``now``; False when it is not lent.

        Also False for a ``who`` too long to record. Returns with the log reset and the first call
        marked in progress, as :meth:`begin` marks a batch's first call (under the same lock: a
        cancel flags a batch's calls, and kills the process when the call in progress is one)."""
        if not self._writer:
            self.restart()  # the slot process's side set up (its packer and progress view)
        data = self._pack(who)
        if len(data) > _WHO_BYTES - _LEN.size:
            return False
        lock, progress = self._lock, self._progress
        lock.acquire()
        try:
            if progress[MODE] != LENT:
                return False
            info = self._info.map
            _LEN.pack_into(info, 0, len(data))
            info[_LEN.size : _LEN.size + len(data)] = data
            progress[LOGGED] = 0.0
            progress[START] = now
            progress[INDEX] = 0.0
            progress[TIMEOUT_S] = timeout_s
            progress[MODE] = DIRECT
        finally:
            lock.release()
        self.restart()
        return True

    def unclaim(self, record: bytes, tell: Callable[[], None], calls: int = 1) -> None:
        """(The slot process) the ``calls`` direct calls are over: their ``record`` (msgpack) kept
        for the worker, their cancel flags cleared, and the slot lent again, or the worker's if it
        asked (a cancel flags calls only while they are the slot's: under this lock).

        ``tell()`` runs under the lock when the worker wants the slot back or the records pass
        ``ENDED_TELL_BYTES`` (the worker, which takes the slot under the lock, then finds the
        message before a batch's reply)."""
        lock, progress = self._lock, self._progress  # set up by the claim
        lock.acquire()
        try:
            used = int(progress[ENDED])
            end = used + len(record)
            if end <= ENDED_BYTES:  # full: the worker has not read them; this one is not counted
                self._info.map[_WHO_BYTES + used : _WHO_BYTES + end] = record
                progress[ENDED] = end
            self._memory.map[:calls] = bytes(calls)
            mark = ENDED_TELL_BYTES
            if progress[WANTED] or (end > mark and used <= mark):  # the worker waits, or records pile up
                progress[TOLD] += 1
                tell()
            progress[MODE] = HELD if progress[WANTED] else LENT
            progress[WANTED] = 0.0
        finally:
            lock.release()

    def told(self) -> None:
        """(The slot process) it sent the worker a message between batches."""
        self.progress[TOLD] += 1

    def take_ended(self) -> list[Any]:
        """(The worker) the records of the direct calls ended since the last take."""
        with self._locked():
            used = int(self.progress[ENDED])
            if not used:
                return []
            data = bytes(self._info.map[_WHO_BYTES : _WHO_BYTES + used])
            self.progress[ENDED] = 0.0
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(data)
        return list(unpacker)

    def watched(self) -> bool:
        """(The slot process, after a claim) True while the worker watches the deadlines of
        direct calls (else tell it one started)."""
        return self._progress[WATCHING] == 1.0

    def revocations(self, known: float) -> tuple[float, dict[str, int] | None]:
        """(The slot process) the revocations' version, and the revocations when newer than
        ``known`` (read before each request: through the progress view once it is set up, a
        ctypes read costs about 1 us)."""
        version = (self._progress if self._writer else self.progress)[REVOKED_AT]
        if version == known:
            return known, None
        info = self._info.map
        (size,) = _LEN.unpack_from(info, _REVOKED_AT)
        start = _REVOKED_AT + _LEN.size
        return version, msgpack.unpackb(info[start : start + size])

    def lend(self, on: bool) -> None:
        """(The worker) lend an idle slot to direct calls, or take it back (one running a direct
        call comes back when that call ends)."""
        with self._locked():
            progress = self.progress
            if progress[MODE] == DIRECT:
                progress[WANTED] = 0.0 if on else 1.0
            else:
                progress[MODE] = LENT if on else HELD

    def hold(self) -> bool:
        """(The worker) take the slot for a batch; False (and wanted back) while a direct call runs."""
        with self._locked():
            progress = self.progress
            if progress[MODE] == DIRECT:
                progress[WANTED] = 1.0
                return False
            progress[MODE] = HELD
            return True

    def direct_call(self) -> list[Any] | None:
        """``[sender, call_id, task]`` of the direct call the slot runs, ``[sender, first_id, task,
        ids]`` of a batch, or None."""
        if self.progress[MODE] != DIRECT:
            return None
        info = self._info.map
        (size,) = _LEN.unpack_from(info, 0)
        who: list[Any] = msgpack.unpackb(info[_LEN.size : _LEN.size + size])
        return who

    def timeout_s(self) -> float:
        """The timeout of each direct call the slot runs (seconds)."""
        return float(self.progress[TIMEOUT_S])

    def deadline(self) -> float:
        """When the direct call in progress must end by (monotonic)."""
        return float(self.progress[START] + self.progress[TIMEOUT_S])

    def flagged(self, calls: int) -> set[int]:
        """(The worker) the places among the first ``calls`` flagged cancelled."""
        flags = self._memory.map[:calls]
        return {i for i, flag in enumerate(flags) if flag} if any(flags) else set()

    def kill_direct(self, sender: str, call_ids: set[str], kill: Callable[[], None]) -> int:
        """Stop these direct calls of ``sender`` if the slot runs them: a lone call by ``kill()``;
        a batch's calls flagged cancelled (each is skipped when its turn comes) and ``kill()``
        when the one in progress is among them. How many were found."""
        with self._locked():
            who = self.direct_call()
            if who is None or who[0] != sender:
                return 0
            if len(who) == 3:
                if who[1] not in call_ids:
                    return 0
                kill()
                return 1
            places = {i for i, call_id in enumerate(who[3]) if call_id in call_ids}
            self.flag(places)
            if self.running() in places:
                kill()
            return len(places)

    def kill_overdue(self, now: float, grace_s: float, kill: Callable[[], None]) -> bool:
        """``kill()`` the process if the direct call in progress is past its deadline plus
        ``grace_s`` (between a batch's calls, or once they all ended, none is)."""
        with self._locked():
            if self.progress[MODE] != DIRECT or self.running() < 0 or now < self.deadline() + grace_s:
                return False
            kill()
            return True

    def watch(self, on: bool) -> bool:
        """Mark whether the worker watches direct calls' deadlines; False (nothing changed) when
        asked to stop while a direct call runs."""
        with self._locked():
            if not on and self.progress[MODE] == DIRECT:
                return False
            self.progress[WATCHING] = 1.0 if on else 0.0
            return True

    def write_revocations(self, data: bytes, version: float) -> bool:
        """Write the revocations (msgpack) for the slot process; False when they do not fit."""
        if len(data) > DIRECT_INFO_BYTES - _REVOKED_AT - _LEN.size:
            return False
        with self._locked():
            info = self._info.map
            _LEN.pack_into(info, _REVOKED_AT, len(data))
            info[_REVOKED_AT + _LEN.size : _REVOKED_AT + _LEN.size + len(data)] = data
            self.progress[REVOKED_AT] = version
        return True
