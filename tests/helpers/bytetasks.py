"""Tasks that make and read a big value that is not an array (written as ``.msgpack``)."""

from __future__ import annotations

from pyrocluster import task


@task
def big_bytes(mib: int) -> bytes:
    return bytes(range(256)) * (mib * 4096)


@task
def length_of(value: bytes) -> int:
    return len(value)
