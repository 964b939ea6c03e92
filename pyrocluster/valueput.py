"""Putting a value written beside a results file onto a worker, in chunks, as a kept value.

``submit --resume`` hands a kept big result to its consumer this way: the file is read
``CHUNK_BYTES`` at a time and sent to a worker's ``values`` object (``put_begin``, ``put_chunk``,
``put_end``) as the value's encoding (``codec.pack``), never whole in the coordinator; the worker
keeps it like a result of its own and the consumer receives a :class:`ValueRef` to it. A
``.msgpack`` file is that encoding already; an ``.npy`` file becomes it by a new header before the
same body bytes (the array extension of ``typed.array_pieces``: dtype, shape, memory order).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Generator
from pathlib import Path
from typing import BinaryIO

import msgpack
import Pyro5.core
import Pyro5.errors

from pyrocluster import typed
from pyrocluster.auth import make_proxy
from pyrocluster.config import Settings
from pyrocluster.nameserver import registry
from pyrocluster.nameserver.registry import WorkerEntry
from pyrocluster.valueref import ValueRef

CHUNK_BYTES = 8 << 20
"""Bytes sent in one ``put_chunk``."""
TIMEOUT_S = 60.0
"""Seconds one chunk may take before the worker counts as unreachable."""
KINDS = ("ndarray", "msgpack")
"""The file types put this way (an Arrow ``.arrow`` file would need reading whole to re-encode)."""


class PutFailed(Exception):
    """The value could not be put on that worker (or its file is not one this module reads)."""


def values_uri(entry: WorkerEntry) -> str | None:
    """The URI of a worker's ``values`` object: its compute object's, on the same daemon."""
    compute = entry.uris.get("compute")
    if compute is None:
        return None
    try:
        uri = Pyro5.core.URI(compute)
    except (Pyro5.errors.PyroError, TypeError, ValueError):
        return None
    prefix = registry.object_name(entry.name, "compute") + "."
    if uri.protocol != "PYRO" or not uri.object.startswith(prefix):
        return None
    instance = uri.object[len(prefix) :]
    return f"PYRO:{registry.object_name(entry.name, 'values')}.{instance}@{uri.location}"


def _npy_head(file: BinaryIO) -> tuple[bytes, int]:
    """The encoding's first bytes for the ``.npy`` file open at its start (left at its body), and
    the body's size."""
    from numpy.lib import format as npy

    try:
        major, _ = npy.read_magic(file)
        read = npy.read_array_header_1_0 if major == 1 else npy.read_array_header_2_0
        shape, fortran, dtype = read(file)
    except ValueError as exc:
        raise PutFailed(f"not an .npy file: {exc}") from None
    if dtype.hasobject:
        raise PutFailed("an .npy file of Python objects")
    body = dtype.itemsize
    for n in shape:
        body *= n
    descr = dtype.str if dtype.fields is None else dtype.descr
    header = msgpack.packb([descr, list(shape), bool(fortran)], use_bin_type=True)
    data_len = 4 + len(header) + body
    if data_len >= 1 << 32:
        raise PutFailed("an array too big for one extension")
    head = b"\xc9" + data_len.to_bytes(4, "big") + bytes([typed.NDARRAY])  # msgpack's ext 32
    return head + len(header).to_bytes(4, "little") + header, body


def encoded(path: Path, kind: str) -> tuple[int, Generator[bytes, None, None]]:
    """The size of a value file's encoding, and its bytes a chunk at a time (PutFailed for a file
    that cannot be sent so, OSError for one that cannot be read)."""
    if kind not in KINDS:
        raise PutFailed(f"a {kind} file is not put in chunks")
    file = open(path, "rb")  # noqa: SIM115 - closed by the generator
    try:
        head, body = _npy_head(file) if kind == "ndarray" else (b"", os.fstat(file.fileno()).st_size)
        if file.tell() + body != os.fstat(file.fileno()).st_size:
            raise PutFailed(f"{path.name} is not the size its header says")
    except BaseException:
        file.close()
        raise
    return len(head) + body, _chunks(file, head)


def _chunks(file: BinaryIO, head: bytes) -> Generator[bytes, None, None]:
    with file:
        first = head + file.read(CHUNK_BYTES - len(head))
        if first:
            yield first
        while chunk := file.read(CHUNK_BYTES):
            yield chunk


def put_file(entry: WorkerEntry, path: Path, kind: str, settings: Settings, owner: str) -> ValueRef:
    """Put the value of a results file's value file on worker ``entry``: its reference there.

    PutFailed when the worker cannot be reached or refuses it; OSError when the file cannot be read.
    """
    uri = values_uri(entry)
    if uri is None:
        raise PutFailed(f"worker {entry.name} has no compute service")
    size, chunks = encoded(path, kind)
    sha = hashlib.sha256()
    try:
        with make_proxy(uri, settings, timeout_s=TIMEOUT_S) as proxy:
            upload = proxy.put_begin(owner, size)
            offset = 0
            for chunk in chunks:
                sha.update(chunk)
                offset = proxy.put_chunk(upload, owner, offset, chunk)
            if offset != size:
                raise PutFailed(f"{path.name} changed while it was read")
            value_id = proxy.put_end(upload, owner, sha.hexdigest())
    except PutFailed:
        raise
    except Exception as exc:  # unreachable, or refused (its cap, too many puts at once): remote errors
        raise PutFailed(f"worker {entry.name}: {type(exc).__name__}: {exc}") from None
    finally:
        chunks.close()
    if not isinstance(value_id, str):
        raise PutFailed(f"worker {entry.name} answered {type(value_id).__name__}")
    return ValueRef(value_id, entry.name, uri, size, sha.hexdigest())
