"""Reading a kept value from the worker that holds it, in chunks, and freeing kept values.

Used by a worker fetching a call's argument from another worker, and by the coordinator writing
a kept result to its results file: either way the value arrives ``CHUNK_BYTES`` at a time through
an authenticated proxy to the holder's ``values`` object, and its sha256 is checked at the end.
(The coordinator<->worker transfer of values inside replies is ``coordinator/bigmessages.py``;
both could share one chunked reader once replies carry references too.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import Pyro5.errors
import serpent

from pyrocluster.auth import make_proxy
from pyrocluster.config import Settings
from pyrocluster.valueref import ValueRef

CHUNK_BYTES = 8 << 20
"""Bytes asked for in one ``read``: big enough to cost little per byte, small for the heap."""
TIMEOUT_S = 60.0
"""Seconds one chunk may take before the holder counts as gone."""

FREE_TIMEOUT_S = 5.0
"""Seconds a holder may take to answer ``free`` (one that does not has lost its values anyway)."""

Sink = Callable[[memoryview], None]


class ValueGone(Exception):
    """The holder of a value is unreachable or no longer has it (its producer must run again)."""

    def __init__(self, ref: ValueRef, why: str) -> None:
        super().__init__(f"value {ref.id} of {ref.size} bytes held by worker {ref.holder} is gone: {why}")
        self.ref = ref


def chunk_bytes(chunk: Any) -> bytes | None:
    """A chunk as bytes (serpent sends bytes as a base64 dict), or None for 'not here'."""
    if chunk is None or isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, dict):
        return bytes(serpent.tobytes(chunk))
    raise TypeError(f"a chunk of {type(chunk).__name__}")


def stream(ref: ValueRef, settings: Settings, sink: Sink) -> None:
    """Hand every byte of ``ref`` to ``sink``, in order; ValueGone when it cannot be read whole
    or is not what the reference says."""
    sha = hashlib.sha256()
    offset = 0
    try:
        with make_proxy(ref.uri, settings, timeout_s=TIMEOUT_S) as proxy:
            while offset < ref.size:
                chunk = chunk_bytes(proxy.read(ref.id, offset, min(CHUNK_BYTES, ref.size - offset)))
                if chunk is None:
                    raise ValueGone(ref, "the holder no longer has it")
                if not chunk:
                    raise ValueGone(ref, f"it ended at {offset} bytes")
                view = memoryview(chunk)
                sha.update(view)
                sink(view)
                offset += len(chunk)
    except (Pyro5.errors.PyroError, OSError, TypeError) as exc:
        raise ValueGone(ref, f"{type(exc).__name__}: {exc}") from None
    if offset != ref.size or sha.hexdigest() != ref.sha256:
        raise ValueGone(ref, "the bytes read are not the value referenced (size or sha256 differs)")


def fetch_into(ref: ValueRef, settings: Settings, out: memoryview) -> None:
    """Read ``ref`` into ``out`` (exactly ``ref.size`` bytes)."""
    at = 0

    def sink(chunk: memoryview) -> None:
        nonlocal at
        if at + len(chunk) > len(out):
            raise ValueGone(ref, "the holder sent more than its size")
        out[at : at + len(chunk)] = chunk
        at += len(chunk)

    stream(ref, settings, sink)


def free(uri: str, owner: str, value_ids: Iterable[str] | None, settings: Settings) -> int:
    """Ask a holder to drop ``owner``'s values (those named, or all); how many it had, 0 when it
    cannot be reached (its values went with it)."""
    try:
        with make_proxy(uri, settings, timeout_s=FREE_TIMEOUT_S) as proxy:
            return int(proxy.free(owner, None if value_ids is None else list(value_ids)))
    except (Pyro5.errors.PyroError, OSError):
        return 0
