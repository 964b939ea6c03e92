"""A reply that is one plain Pyro5 message, read in one step from the receive that took it.

A lone call's reply (``{"outcomes": [[code, value, ms]]}``, tens of bytes) nearly always comes
whole in the first receive, with nothing before or after it. The ordinary steps then still make
a ``ReceivingMessage`` from the header, copy the payload into the reader's buffer, hand it to
``add_payload`` and decode it through ``Channel.result_of``: about 320 of a lone call's ~3,150
coordinator opcodes (``bench.lone_ops``). Here the header is unpacked once and the body decoded
straight from the bytes that came, with the checks those steps make on this shape (tag, version,
magic, a result, the call's sequence number, the size) and Pyro5's own msgpack hooks.

Anything else goes the ordinary way with the same bytes, which then reports what is wrong: part
of a message or more than one, an attachment before it, annotations, compression or any other
flag (an exception reply), another serializer, bytes the decoder refuses, a reply naming
attachments.

The figure it buys: a lone call's coordinator opcodes 3,162 -> 2,904 (``bench.lone_ops``).
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
from Pyro5 import protocol, serializers

_HEADER = struct.Struct(protocol._header_format)
_SIZE = _HEADER.size
_MSGPACK = serializers.serializers["msgpack"]
_OBJECT_HOOK, _EXT_HOOK = _MSGPACK.object_hook, _MSGPACK.ext_hook
_EXPECTED = _HEADER.pack(
    b"PYRO", protocol.PROTOCOL_VERSION, protocol.MSG_RESULT, _MSGPACK.serializer_id, 0, 0, 0, 0, bytes(16), 0,
    protocol._magic_number,
)  # fmt: skip
_LEAD, _MAGIC = _EXPECTED[:8], _EXPECTED[-2:]
"""A msgpack result's tag, version, type and serializer (its first 8 bytes) and its magic number."""
_FIELDS = struct.Struct("!HHII")
"""The header's flags, sequence number, data size and annotations size (from its 8th byte)."""
_CORR_ID = protocol.FLAGS_CORR_ID

NOT_PLAIN: Any = object()
"""What :func:`plain_value` returns for bytes the ordinary steps must read."""


def plain_value(chunk: bytes, seq: int) -> Any:
    """The value of the msgpack reply to call ``seq`` that is exactly ``chunk``; NOT_PLAIN for
    anything else."""
    if chunk[:8] != _LEAD or chunk[38:40] != _MAGIC:
        return NOT_PLAIN
    flags, reply_seq, size, notes = _FIELDS.unpack_from(chunk, 8)
    if (
        flags & ~_CORR_ID
        or notes
        or reply_seq != seq
        or _SIZE + size != len(chunk)
        or size > protocol.config.MAX_MESSAGE_SIZE
    ):
        return NOT_PLAIN
    try:
        value = msgpack.unpackb(chunk[_SIZE:], raw=False, object_hook=_OBJECT_HOOK, ext_hook=_EXT_HOOK)
    except Exception:  # the ordinary steps decode it again and say why it cannot be
        return NOT_PLAIN
    if type(value) is dict and "attached" in value:
        return NOT_PLAIN
    return value
