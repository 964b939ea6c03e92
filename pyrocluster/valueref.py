"""A reference to a big value kept on the worker that made it, in place of the value itself.

A job's call whose encoded result is over ``KEEP_BYTES`` leaves that result in its worker's value
store (``services/valuestore.py``) and its reply carries a :class:`ValueRef`: the value's id, its
size and sha256, the worker that holds it and the URI of that worker's ``values`` object. A call
that receives the reference as an argument gets the value itself: its worker fetches the bytes
from the holder (``valuefetch.py``) and splices them into the call's arguments before running it
(docs/protocol.md, "Big values between tasks"). On the wire the reference is the msgpack
extension ``VALUEREF`` whose body is ``[id, holder, uri, size, sha256, source]``.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgpack

T = TypeVar("T")

VALUEREF = 0x70
"""The msgpack extension code of a reference."""
KEEP_BYTES = 1 << 20
"""A kept call's encoded result over this many bytes stays on its worker."""
MAX_FIELD_CHARS = 512
"""Longest text field of a reference accepted."""
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BadReference(ValueError):
    """Bytes that are not a reference this module writes."""


class ValueRef:
    """A value of ``size`` encoded bytes (``codec.pack``), held by worker ``holder``.

    A plain class rather than a dataclass: orjson would write a dataclass itself, and a results
    file spells a reference its own way (:meth:`json`).
    """

    __slots__ = ("id", "holder", "uri", "size", "sha256", "source", "file")

    def __init__(self, id: str, holder: str, uri: str, size: int, sha256: str, source: str = "") -> None:
        self.id = id
        self.holder = holder
        """The holding worker's name."""
        self.uri = uri
        """The Pyro URI of the holder's ``values`` object."""
        self.size = size
        self.sha256 = sha256
        self.source = source
        """The job task whose result it is (set by the job runner; empty elsewhere)."""
        self.file: dict[str, Any] | None = None
        """Where the coordinator wrote the value (the results file's ``$file`` reference), once it
        did; never on the wire."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ValueRef) and ref_fields(self) == ref_fields(other)

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"ValueRef({self.id!r}, holder={self.holder!r}, size={self.size}, source={self.source!r})"

    def from_source(self, source: str) -> ValueRef:
        """The same reference naming the task that made it."""
        return ValueRef(self.id, self.holder, self.uri, self.size, self.sha256, source)

    def body(self) -> bytes:
        """The extension body."""
        return msgpack.packb(ref_fields(self), use_bin_type=True)

    def ext(self) -> msgpack.ExtType:
        """The msgpack extension of the reference."""
        return msgpack.ExtType(VALUEREF, self.body())

    def json(self) -> dict[str, Any]:
        """How a results file spells the reference: the file the coordinator wrote it to, or
        (not written) the task that made it."""
        if self.file is not None:
            return self.file
        return {"$result": self.source, "bytes": self.size, "sha256": self.sha256}


def ref_fields(ref: ValueRef) -> list[Any]:
    """A reference as the plain list a request's ``fetch`` carries (the extension's body)."""
    return [ref.id, ref.holder, ref.uri, ref.size, ref.sha256, ref.source]


def decode(data: bytes) -> ValueRef:
    """A reference from its extension body; BadReference for anything else."""
    try:
        fields = msgpack.unpackb(data, raw=False, max_array_len=6, max_str_len=MAX_FIELD_CHARS)
    except Exception as exc:
        raise BadReference(f"not a value reference: {type(exc).__name__}") from None
    if not (isinstance(fields, list) and len(fields) == 6):
        raise BadReference("a value reference is six fields")
    ref_id, holder, uri, size, sha256, source = fields
    if not all(isinstance(f, str) for f in (ref_id, holder, uri, sha256, source)):
        raise BadReference("a value reference's text fields must be strings")
    if type(size) is not int or size < 0 or not _HEX64.fullmatch(sha256) or not ref_id:
        raise BadReference("a value reference needs an id, a size and a sha256")
    return ValueRef(ref_id, holder, uri, size, sha256, source)


def refs_in(value: Any, found: list[ValueRef] | None = None) -> list[ValueRef]:
    """Every reference inside ``value`` (lists, tuples and dict values, at any depth), in order."""
    return instances_in(value, ValueRef, [] if found is None else found)


def instances_in(value: Any, kind: type[T], found: list[T]) -> list[T]:
    """``found`` with every object of exactly type ``kind`` inside ``value`` (lists, tuples and
    dict values, at any depth) appended, in order."""
    of = type(value)
    if of is kind:
        found.append(value)
    elif of is list or of is tuple:
        for item in value:
            instances_in(item, kind, found)
    elif of is dict:
        for item in value.values():
            instances_in(item, kind, found)
    return found


def swapped(value: Any, new: dict[str, Any]) -> Any:
    """``value`` with each reference whose id is in ``new`` replaced by its new value (the
    containers on the way copied, everything else shared)."""
    kind = type(value)
    if kind is ValueRef:
        return new.get(value.id, value)
    if kind is list or kind is tuple:
        return kind(swapped(item, new) for item in value)
    if kind is dict:
        return {key: swapped(item, new) for key, item in value.items()}
    return value
