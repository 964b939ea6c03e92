"""Results too big for a line of JSON live beside the results file, in ``<output>.values/``.

A result whose line would exceed ``BIG_RESULT_BYTES`` is written to its own file (an array as
``.npy``, a frame as Arrow IPC ``.arrow``, anything else as our msgpack encoding ``.msgpack``),
and the record's ``result`` says where: ``{"$file": "<path relative to the results file>",
"type": ..., "bytes": N, "sha256": "<hex>"}`` (SPEC 9). :func:`load_result` reads either form
back. No format here can hold code: ``.npy`` files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import IO, Any

from pyrocluster import codec, typed

BIG_RESULT_BYTES = 1 << 20
"""A record line longer than this (bytes) has its result written to a file of its own."""
_EXT32 = b"\xc9"
"""How the encoding of a value of over 64 KiB that is an extension (an array) starts."""
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def values_dir(results_path: Path) -> Path:
    """The folder beside a results file that holds its big results."""
    return results_path.with_name(results_path.name + ".values")


def _file_name(task_id: str, suffix: str) -> str:
    safe = _SAFE.sub("_", task_id)[:120]
    if safe != task_id:  # two ids that sanitize alike must not share a file
        safe += "-" + hashlib.sha256(task_id.encode()).hexdigest()[:12]
    return safe + suffix


def _encoded(value: Any) -> tuple[str, str, bytes | None, Any]:
    """``(type, suffix, bytes, writer)``: the bytes to write, or a writer for a numpy array."""
    module = type(value).__module__.partition(".")[0]
    if module == "numpy" and type(value).__name__ == "ndarray" and not value.dtype.hasobject:
        return "ndarray", ".npy", None, value
    if module == "pandas" and type(value).__name__ in ("DataFrame", "Series"):
        from pyrocluster.typed import arrow_file

        return type(value).__name__, ".arrow", arrow_file(value), None
    return "msgpack", ".msgpack", codec.pack(value), None


def spill(record: dict[str, Any], results_path: Path) -> dict[str, Any]:
    """``record`` with its result written to a file and replaced by the reference to it."""
    kind, suffix, data, array = _encoded(record["result"])
    folder = values_dir(results_path)
    folder.mkdir(exist_ok=True)
    target = folder / _file_name(str(record["id"]), suffix)
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as out:
        if array is not None:
            sys.modules["numpy"].save(out, array, allow_pickle=False)
        else:
            out.write(data or b"")
        out.flush()
        os.fsync(out.fileno())
    digest, size = file_digest(partial)
    os.replace(partial, target)
    reference = {"$file": f"{folder.name}/{target.name}", "type": kind, "bytes": size, "sha256": digest}
    return {**record, "result": reference}


class ValueFileWriter:
    """Turns the encoded bytes of a value (``codec.pack``), as they arrive, into the file
    :func:`spill` would write: an ``.npy`` for an array (its header rewritten, its body as is),
    ``.msgpack`` with the bytes unchanged for anything else (a frame too: rewriting its Arrow stream
    as a file would need it whole)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._head = bytearray()
        self.kind: str | None = None
        self.sha = hashlib.sha256()
        self.size = 0

    def feed(self, chunk: memoryview) -> None:
        if self.kind is None:
            self._head += chunk
            self._start()
            if self.kind is not None:
                self._head = bytearray()
            return
        self._write(chunk)

    def end(self) -> None:
        """The value ended: one shorter than an array's header is written as it came."""
        if self.kind is None:
            self.kind = "msgpack"
            self._write(memoryview(bytes(self._head)))

    def _start(self) -> None:
        """Decide the format once the value's header has arrived (more bytes may be needed)."""
        head = self._head
        if len(head) < 6 and head[:1] == _EXT32:
            return
        if head[:1] != _EXT32 or head[5] != typed.NDARRAY:
            self.kind = "msgpack"
            self._write(memoryview(bytes(head)))
            return
        if len(head) < 10:
            return
        header_len = int.from_bytes(head[6:10], "little")
        if len(head) < 10 + header_len:
            return
        import msgpack
        import numpy
        from numpy.lib import format as npy

        descr, shape, fortran = msgpack.unpackb(bytes(head[10 : 10 + header_len]), raw=False)
        dtype = typed.dtype_of(numpy, descr)
        header = BytesIO()
        descr = npy.dtype_to_descr(dtype)
        described = {"descr": descr, "fortran_order": bool(fortran), "shape": tuple(shape)}
        npy.write_array_header_1_0(header, described)
        self.kind = "ndarray"
        self._write(memoryview(header.getvalue()))
        self._write(memoryview(bytes(head[10 + header_len :])))

    def _write(self, chunk: memoryview) -> None:
        self.sha.update(chunk)
        self.size += len(chunk)
        self._out.write(chunk)


def spill_stream(
    task_id: str, results_path: Path, stream: Callable[[Callable[[memoryview], None]], None]
) -> dict[str, Any]:
    """Write a value that arrives in chunks (``stream(sink)`` hands them over) beside the results
    file, never holding it whole; the record's ``$file`` reference to it."""
    folder = values_dir(results_path)
    folder.mkdir(exist_ok=True)
    partial = folder / (_file_name(task_id, "") + ".partial")
    with open(partial, "wb") as out:
        writer = ValueFileWriter(out)
        stream(writer.feed)
        writer.end()
        out.flush()
        os.fsync(out.fileno())
    target = folder / _file_name(task_id, ".npy" if writer.kind == "ndarray" else ".msgpack")
    os.replace(partial, target)
    return {"$file": f"{folder.name}/{target.name}", "type": writer.kind, "bytes": writer.size,
            "sha256": writer.sha.hexdigest()}  # fmt: skip


def file_digest(path: Path) -> tuple[str, int]:
    """A file's sha256 (hex) and size, read a chunk at a time."""
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def load_result(record: dict[str, Any], results_path: str | os.PathLike[str]) -> Any:
    """A record's result, read from its file when it was written beside the results file.

    ValueError when the file is missing, outside the values folder, or not what was recorded.
    """
    result = record.get("result")
    if not (isinstance(result, dict) and "$file" in result):
        return result
    base = Path(results_path).parent.resolve()
    path = (base / str(result["$file"])).resolve()
    if base not in path.parents:
        raise ValueError(f"{result['$file']!r} is not beside the results file")
    try:
        digest, _ = file_digest(path)
    except OSError as exc:
        raise ValueError(f"the result of {record.get('id')!r} is gone: {exc.strerror or exc}") from None
    if digest != result.get("sha256"):
        raise ValueError(f"{path} is not the result recorded for {record.get('id')!r} (sha256 differs)")
    kind = result.get("type")
    if kind == "ndarray":
        import numpy

        return numpy.load(path, allow_pickle=False)
    data = path.read_bytes()
    if kind in ("DataFrame", "Series"):
        from pyrocluster.typed import read_arrow_file

        return read_arrow_file(data, series=kind == "Series")
    return codec.unpack(data)
