"""Pyro5 msgpack messages of the coordinator encoded and decoded without copies of their bytes.

Pyro5 encodes a request with ``msgpack.packb`` (the bytes copied out of the packer) and then
joins its header to it (copied again), and decodes a reply only from ``bytes`` (a received
buffer copied first). For a message holding one big value each of those is a copy of the value:
here the request is the packer's own buffer plus a separate header, written piece by piece, and
the reply is decoded straight from the buffer it was received into. A 256 MiB echo: the
coordinator's peak RSS falls by about three times the value (see ``bench/big_values.py``).

A ``run_batch`` request goes further: a call's payload of ``attachments.ATTACH_BYTES`` or more is
taken out of the message and sent after it as an attachment (docs/protocol.md, "Attachments"),
and the request asks the worker to send big outcome values the same way, before its reply. So
the worker's daemon never reads a big value as part of a message, and neither side packs one.
"""

from __future__ import annotations

import struct
import threading
from typing import Any

import msgpack
from Pyro5 import protocol, serializers
from Pyro5.callcontext import current_context

from pyrocluster import attachments
from pyrocluster.coordinator.frames import JOIN_BYTES

_HEADER = struct.Struct(protocol._header_format)


def invoke_pieces(
    serializer: serializers.MsgpackSerializer,
    seq: int,
    object_id: str,
    method: str,
    args: tuple[Any, ...],
    scan: bool = True,
) -> bytes | list[Any]:
    """The request ``object_id.method(*args)`` as [header, payload, attachments...]: the same
    message as Pyro5's ``SendingMessage`` of ``dumpsCall`` (with big payloads of a ``run_batch``
    taken out, see :func:`detach`; without ``scan`` the caller knows there is none), never
    joined; a small one (``frames.JOIN_BYTES`` at most, which the writer would join) as its bytes."""
    bodies: list[Any] = []
    if method == "run_batch" and len(args) == 1:
        if scan:
            request, bodies = detach(args[0])
        else:  # as detach() makes it when nothing is big
            request = {**args[0], "attach": 1}
        args = (request,)
    packer = msgpack.Packer(use_bin_type=True, default=serializer.default, autoreset=False)
    packer.pack((object_id, method, args, {}))
    payload = packer.getbuffer()  # a view of the packer's buffer: no bytes copy
    header = _header(serializer, seq, len(payload))
    if not bodies:
        return header + payload if len(payload) <= JOIN_BYTES else [header, payload]
    return [header, payload, *(piece for body in bodies for piece in attachments.pieces(body))]


def invoke_small(
    serializer: serializers.MsgpackSerializer, seq: int, object_id: str, method: str, args: tuple[Any, ...]
) -> bytes:
    """:func:`invoke_pieces` of a request with nothing to take out (a lone plain call's: its
    payload is under ``ATTACH_BYTES``), as its bytes: the same message, packed by a packer kept
    per thread, with no scan of the request's calls (4-5 us of the 9-10 us of
    ``invoke_pieces`` for a lone call, in a hot loop)."""
    if method == "run_batch" and len(args) == 1 and type(args[0]) is dict:
        args = ({**args[0], "attach": 1},)  # as detach() makes it when nothing is big
    kept = getattr(_kept, "packer", None)
    if kept is None or kept[0] is not serializer:
        kept = _kept.packer = (serializer, msgpack.Packer(use_bin_type=True, default=serializer.default))
    payload = kept[1].pack((object_id, method, args, {}))  # a failed pack leaves the packer empty
    return _header(serializer, seq, len(payload)) + payload


_kept = threading.local()
"""This thread's packer for :func:`invoke_small` (a Packer is not thread-safe) and its serializer."""


def _header(serializer: serializers.MsgpackSerializer, seq: int, size: int) -> bytes:
    """Pyro5's message header of an invoke request whose payload is ``size`` bytes."""
    flags, corr_id = 0, protocol._empty_correlation_id
    if current_context.correlation_id:
        flags, corr_id = protocol.FLAGS_CORR_ID, current_context.correlation_id.bytes
    if size > protocol.config.MAX_MESSAGE_SIZE:
        raise protocol.errors.ProtocolError(
            f"message too large ({size}, max={protocol.config.MAX_MESSAGE_SIZE})"
        )
    return _HEADER.pack(
        b"PYRO",
        protocol.PROTOCOL_VERSION,
        protocol.MSG_INVOKE,
        serializer.serializer_id,
        flags,
        seq,
        size,
        0,
        corr_id,
        0,
        protocol._magic_number,
    )


def detach(request: Any) -> tuple[Any, list[Any]]:
    """A ``run_batch`` request with its big payloads taken out, and those payloads in order.

    Each such call's payload becomes None and ``request["attached"]`` lists the calls' places;
    ``request["attach"]`` asks the worker to send big outcome values as attachments too.
    """
    if not isinstance(request, dict):
        return request, []
    payloads, calls = request.get("payloads"), request.get("calls")
    out = {**request, "attach": 1}
    if isinstance(payloads, list):  # the calls as columns
        try:  # their payloads bytes, as the coordinator packs them: one C-level pass
            none_big = max(map(len, payloads), default=0) < attachments.ATTACH_BYTES
        except TypeError:  # one without a length: looked at one by one
            none_big = False
        places = [] if none_big else [i for i, payload in enumerate(payloads) if _big(payload)]
        bodies = [payloads[i] for i in places]
        if places:
            out["payloads"] = list(payloads)
            for i in places:
                out["payloads"][i] = None
    elif isinstance(calls, list):
        places = [i for i, c in enumerate(calls) if isinstance(c, list) and len(c) > 2 and _big(c[2])]
        bodies = [calls[i][2] for i in places]
        if places:
            out["calls"] = list(calls)
            for i in places:
                out["calls"][i] = [*calls[i][:2], None, *calls[i][3:]]
    else:
        return request, []
    if places:
        out["attached"] = places
    return out, bodies


def _big(payload: Any) -> bool:
    return isinstance(payload, (bytes, bytearray)) and len(payload) >= attachments.ATTACH_BYTES


def reattach(reply: Any, bodies: list[bytes | bytearray]) -> Any:
    """A ``run_batch`` reply with the outcome values sent before it put back in their places.

    ValueError when the reply does not name exactly the attachments that came.
    """
    places = reply.get("attached") if isinstance(reply, dict) else None
    if places is None and not bodies:
        return reply
    outcomes = reply.get("outcomes") if isinstance(reply, dict) else None
    if (
        not isinstance(places, list)
        or not isinstance(outcomes, list)
        or len(places) != len(bodies)
        or len(set(places)) != len(places)
    ):
        raise ValueError(f"a reply naming {places!r:.80} for {len(bodies)} attachments")
    for place, body in zip(places, bodies, strict=True):
        if type(place) is not int or not 0 <= place < len(outcomes):
            raise ValueError(f"an attachment for outcome {place!r:.40} of {len(outcomes)}")
        outcome = outcomes[place]
        if not isinstance(outcome, list) or len(outcome) != 3 or outcome[1] is not None:
            raise ValueError(f"an attachment for outcome {place} that holds a value already")
        outcome[1] = body
    return reply


def loads(serializer: Any, data: Any) -> Any:
    """Decode a reply payload; a msgpack one straight from its buffer (Pyro5 would copy a
    bytearray to bytes first)."""
    if isinstance(serializer, serializers.MsgpackSerializer):
        return msgpack.unpackb(
            data, raw=False, object_hook=serializer.object_hook, ext_hook=serializer.ext_hook
        )
    return serializer.loads(data)
