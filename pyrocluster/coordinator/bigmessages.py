"""Pyro5 msgpack messages of the coordinator encoded and decoded without copies of their bytes.

Pyro5 encodes a request with ``msgpack.packb`` (the bytes copied out of the packer) and then
joins its header to it (copied again), and decodes a reply only from ``bytes`` (a received
buffer copied first). For a message holding one big value each of those is a copy of the value:
here the request is the packer's own buffer plus a separate header, written piece by piece, and
the reply is decoded straight from the buffer it was received into. A 256 MiB echo: the
coordinator's peak RSS falls by about three times the value (see ``bench/big_values.py``).
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
from Pyro5 import protocol, serializers
from Pyro5.callcontext import current_context

_HEADER = struct.Struct(protocol._header_format)


def invoke_pieces(
    serializer: serializers.MsgpackSerializer, seq: int, object_id: str, method: str, args: tuple[Any, ...]
) -> list[Any]:
    """The request ``object_id.method(*args)`` as [header, payload]: the same bytes as Pyro5's
    ``SendingMessage`` of ``dumpsCall``, never joined."""
    packer = msgpack.Packer(use_bin_type=True, default=serializer.default, autoreset=False)
    packer.pack((object_id, method, args, {}))
    payload = packer.getbuffer()  # a view of the packer's buffer: no bytes copy
    flags, corr_id = 0, protocol._empty_correlation_id
    if current_context.correlation_id:
        flags, corr_id = protocol.FLAGS_CORR_ID, current_context.correlation_id.bytes
    if len(payload) > protocol.config.MAX_MESSAGE_SIZE:
        raise protocol.errors.ProtocolError(
            f"message too large ({len(payload)}, max={protocol.config.MAX_MESSAGE_SIZE})"
        )
    header = _HEADER.pack(
        b"PYRO",
        protocol.PROTOCOL_VERSION,
        protocol.MSG_INVOKE,
        serializer.serializer_id,
        flags,
        seq,
        len(payload),
        0,
        corr_id,
        0,
        protocol._magic_number,
    )
    return [header, payload]


def loads(serializer: Any, data: Any) -> Any:
    """Decode a reply payload; a msgpack one straight from its buffer (Pyro5 would copy a
    bytearray to bytes first)."""
    if isinstance(serializer, serializers.MsgpackSerializer):
        return msgpack.unpackb(
            data, raw=False, object_hook=serializer.object_hook, ext_hook=serializer.ext_hook
        )
    return serializer.loads(data)
