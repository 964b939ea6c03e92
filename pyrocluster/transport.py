"""Process-wide transport setup: the serializer guard, the compressed-message guard and TLS contexts."""

from __future__ import annotations

from typing import Any

import Pyro5
import Pyro5.errors
import Pyro5.protocol
import Pyro5.serializers

from pyrocluster import pyro5_hooks, tls
from pyrocluster.config import SAFE_SERIALIZERS, Settings
from pyrocluster.errors import ConfigError


def prepare_transport(settings: Settings) -> None:
    """Install the serializer guard and, with TLS, our TLS contexts (idempotent)."""
    if settings.secret is not None and not settings.secret:
        raise ConfigError("the cluster secret is empty")
    pyro5_hooks.ensure()
    refuse_unsafe_serializers()
    refuse_compressed_messages()
    if settings.tls:
        if not Pyro5.config.SSL:
            raise ConfigError(
                "TLS is configured but Pyro5 is not: call pyrocluster.config.apply(settings) first"
            )
        tls.install_tls(settings)


class _RefusedSerializer:
    """Stands in Pyro5's by-id table for an unsafe serializer: never decodes, still encodes.

    Pyro5 looks up the serializer of every incoming message by its id (whatever
    ``Pyro5.serializers.serializers`` says) and answers in the same one; keeping ``dumps`` lets
    the peer read the refusal, while ``loads`` refuses before any untrusted byte is decoded.
    """

    def __init__(self, real: Any) -> None:
        self.real = real
        self.serializer_id: int = real.serializer_id
        self.name = type(real).__name__.removesuffix("Serializer").lower()

    def _refuse(self, *_: Any) -> Any:
        raise Pyro5.errors.SecurityError(
            f"pyrocluster refuses the {self.name} serializer; use {' or '.join(SAFE_SERIALIZERS)}"
        )

    loads = loadsCall = _refuse  # noqa: N815 (Pyro5 method name)

    def dumps(self, data: Any) -> bytes:
        """Encode with the real serializer (encoding a reply is safe, decoding is not)."""
        return bytes(self.real.dumps(data))

    def dumpsCall(self, obj: str, method: str, vargs: Any, kwargs: Any) -> bytes:  # noqa: N802
        """Encode a call with the real serializer."""
        return bytes(self.real.dumpsCall(obj, method, vargs, kwargs))


_SAFE_SERIALIZER_IDS = frozenset(
    {Pyro5.serializers.SerpentSerializer.serializer_id, Pyro5.serializers.MsgpackSerializer.serializer_id}
)


def refuse_unsafe_serializers() -> None:
    """Make every Pyro5 endpoint in this process refuse to decode marshal and json (idempotent)."""
    table = Pyro5.serializers.serializers_by_id
    for serializer_id, serializer in list(table.items()):
        if serializer_id not in _SAFE_SERIALIZER_IDS and not isinstance(serializer, _RefusedSerializer):
            table[serializer_id] = _RefusedSerializer(serializer)


def refuse_compressed_messages() -> None:
    """Make every Pyro5 endpoint in this process refuse compressed messages (idempotent).

    Pyro5 inflates a compressed payload with no limit on the result, and does so before the
    handshake is checked: half a megabyte from anyone who can connect becomes a gigabyte in the
    daemon's memory (a decompression bomb). pyrocluster never compresses (``config.apply`` leaves
    Pyro5's COMPRESSION off), so a compressed message is refused unread.
    """
    cls = Pyro5.protocol.ReceivingMessage
    if getattr(cls.add_payload, "pyrocluster_guard", False):
        return
    original = cls.add_payload

    def add_payload(self: Any, payload: Any) -> None:
        if self.flags & Pyro5.protocol.FLAGS_COMPRESSED:
            raise Pyro5.errors.ProtocolError("pyrocluster refuses compressed messages")
        original(self, payload)

    add_payload.pyrocluster_guard = True  # type: ignore[attr-defined]
    # pyro5_hooks checks that Pyro5's own add_payload (the one that inflates) is what we wrap
    add_payload.pyrocluster_original = original  # type: ignore[attr-defined]
    cls.add_payload = add_payload  # type: ignore[method-assign]
