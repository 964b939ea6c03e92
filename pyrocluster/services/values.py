"""Big values between tasks on a worker: results kept here, arguments fetched from their holder.

:class:`ValuesService` is the exposed ``values`` object other workers and coordinators read kept
values from, a chunk at a time. :class:`ValueKeeper` is what the compute service uses: it keeps
the big results of the calls a request names in ``keep`` (the reply carries a
:class:`~pyrocluster.valueref.ValueRef` instead), and before a call runs it replaces each
reference the request lists in ``fetch`` for that call by the value's bytes, spliced into the
call's encoded arguments: from this worker's own store, or read from the holder
(docs/protocol.md, "Big values between tasks").
"""

from __future__ import annotations

from typing import Any

import msgpack
import Pyro5.api

from pyrocluster import codec, valuefetch, valueref
from pyrocluster.config import Settings
from pyrocluster.defaults import DEFAULT_MAX_VALUE_BYTES
from pyrocluster.protocol import ERROR, OK
from pyrocluster.roles import requires
from pyrocluster.services.holders import RegisteredHolders
from pyrocluster.services.valuestore import ValueStore
from pyrocluster.slots.batch import Outcome, encoded_failure
from pyrocluster.tokens import Role
from pyrocluster.valueref import KEEP_BYTES, ValueRef

MAX_READ_BYTES = 32 << 20
"""Most bytes one ``read`` returns."""
MAX_REFS = 1000
"""Most references one call may receive."""


@Pyro5.api.expose
class ValuesService:
    """The ``values`` object of a worker: reads and frees the values its store keeps."""

    def __init__(self, store: ValueStore, max_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> None:
        self._store = store
        self._max_bytes = max_bytes
        """Largest value put here (the worker's ``max_value_bytes``)."""

    @requires(Role.SUBMITTER, "read kept values")
    def read(self, value_id: Any, offset: Any, size: Any) -> bytes | None:
        """Up to ``size`` bytes of a kept value from ``offset``; None when it is not kept here."""
        if not isinstance(value_id, str) or len(value_id) > valueref.MAX_FIELD_CHARS:
            raise ValueError("value_id must be a string")
        if type(offset) is not int or offset < 0 or type(size) is not int or not 0 < size <= MAX_READ_BYTES:
            raise ValueError(f"offset must be >= 0 and size from 1 to {MAX_READ_BYTES}")
        return self._store.read(value_id, offset, size)

    @requires(Role.SUBMITTER, "free kept values")
    def free(self, owner: Any, value_ids: Any) -> int:
        """Drop ``owner``'s kept values (those named, or all when None); how many were here."""
        if not isinstance(owner, str) or not (
            value_ids is None or (isinstance(value_ids, list) and all(isinstance(v, str) for v in value_ids))
        ):
            raise ValueError("free(owner, value_ids): a string and a list of strings (or None)")
        return self._store.free(owner, value_ids)

    @requires(Role.SUBMITTER, "put values")
    def put_begin(self, owner: Any, size: Any) -> str:
        """Start putting a value of ``size`` encoded bytes for coordinator ``owner``: the put's id."""
        if not isinstance(owner, str) or len(owner) > valueref.MAX_FIELD_CHARS:
            raise ValueError("owner must be a string")
        if type(size) is not int or not 0 < size <= self._max_bytes:
            raise ValueError(f"size must be from 1 to max_value_bytes ({self._max_bytes} bytes)")
        return self._store.begin(owner, size)

    @requires(Role.SUBMITTER, "put values")
    def put_chunk(self, upload_id: Any, owner: Any, offset: Any, chunk: Any) -> int:
        """The next chunk of a put, from ``offset``: the bytes received so far."""
        if not (isinstance(upload_id, str) and isinstance(owner, str)) or type(offset) is not int:
            raise ValueError("put_chunk(upload_id, owner, offset, chunk): two strings, an int, bytes")
        data = valuefetch.chunk_bytes(chunk)
        if not data or len(data) > MAX_READ_BYTES:
            raise ValueError(f"a chunk is 1 to {MAX_READ_BYTES} bytes")
        return self._store.add(upload_id, owner, offset, data)

    @requires(Role.SUBMITTER, "put values")
    def put_end(self, upload_id: Any, owner: Any, sha256: Any) -> str:
        """Keep a put whose bytes all arrived and hash to ``sha256``: the kept value's id."""
        if not (isinstance(upload_id, str) and isinstance(owner, str) and isinstance(sha256, str)):
            raise ValueError("put_end(upload_id, owner, sha256): three strings")
        return self._store.finish(upload_id, owner, sha256)[0]

    @requires(Role.VIEWER, "see kept values")
    def usage(self) -> dict[str, int]:
        """How many values are kept, and their bytes in memory and spilled to disk."""
        count, memory, spilled = self._store.usage()
        return {"values": count, "memory_bytes": memory, "spilled_bytes": spilled}


def parse_refs(raw: Any) -> list[ValueRef] | str:
    """The references a request lists for one call, or what is wrong with them."""
    if not isinstance(raw, list) or len(raw) > MAX_REFS:
        return f"fetch: a list of at most {MAX_REFS} references per call"
    refs = []
    for fields in raw:
        try:
            refs.append(valueref.decode(msgpack.packb(fields, use_bin_type=True)))
        except (valueref.BadReference, TypeError, ValueError) as exc:
            return f"fetch: {exc}"
    return refs


class ValueKeeper:
    """The compute service's side of big values: keep results, resolve arguments."""

    def __init__(
        self, store: ValueStore, settings: Settings, holder: str, uri: str, holders: RegisteredHolders
    ) -> None:
        self.store = store
        self._settings = settings
        self._holder = holder
        self._uri = uri
        self._holders = holders

    def keep(self, owner: str, outcome: Outcome) -> Outcome:
        """``outcome`` with its value kept here and a reference in its place, when it is a result
        over ``KEEP_BYTES``; else ``outcome`` itself."""
        if outcome[0] != OK or outcome[1] is None or len(outcome[1]) <= KEEP_BYTES:
            return outcome
        data = outcome[1]
        if isinstance(data, memoryview):  # a view may be of a slot's buffer, reused by its next batch
            data = bytes(data)
        value_id, digest = self.store.keep(data, owner)
        ref = ValueRef(value_id, self._holder, self._uri, len(data), digest)
        return [OK, codec.pack(ref), outcome[2]]

    def resolve(self, data: bytes | bytearray, raw_refs: Any) -> bytes | bytearray | Outcome:
        """A call's encoded arguments with each listed reference replaced by its value's bytes,
        or the failure outcome of the call (ERROR ``ValueGone`` when a holder cannot give it)."""
        refs = parse_refs(raw_refs)
        if isinstance(refs, str):
            return encoded_failure(ERROR, "InvalidCall", refs)
        places: list[tuple[int, int, ValueRef]] = []  # (start, end, ref) in the arguments
        for ref in {r.id: r for r in refs}.values():
            marker = codec.pack(ref)
            at = data.find(marker)
            while at >= 0:
                places.append((at, at + len(marker), ref))
                at = data.find(marker, at + len(marker))
        if not places:
            return data
        places.sort(key=lambda p: p[0])
        size = len(data) + sum(ref.size - (end - start) for start, end, ref in places)
        out = bytearray(size)
        view = memoryview(out)
        filled: dict[str, memoryview] = {}
        src = dst = 0
        try:
            for start, end, ref in places:
                view[dst : dst + start - src] = data[src:start]
                dst += start - src
                target = view[dst : dst + ref.size]
                if ref.id in filled:
                    target[:] = filled[ref.id]
                else:
                    self._fill(ref, target)
                    filled[ref.id] = target
                dst += ref.size
                src = end
        except valuefetch.ValueGone as exc:
            return encoded_failure(ERROR, "ValueGone", str(exc))
        view[dst:] = data[src:]
        return out

    def _fill(self, ref: ValueRef, target: memoryview) -> None:
        """Write a value into ``target``: this worker's own copy, or the holder's, in chunks."""
        own = self.store.whole(ref.id) if ref.uri == self._uri else None
        if own is not None:
            target[:] = own
            return
        why_not = self._holders.why_not(ref)
        if why_not is not None:
            raise valuefetch.ValueGone(ref, why_not)
        valuefetch.fetch_into(ref, self._settings, target)

    def close(self) -> None:
        """Drop every kept value."""
        self.store.close()
