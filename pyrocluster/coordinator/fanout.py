"""One call to each of many Pyro5 objects at once, multiplexed on one wire (status, preflight).

A thread per worker asked would make ``status`` of a large cluster start as many threads as it
has workers. Here every call goes out on one :class:`~pyrocluster.coordinator.wire.Wire` (a
coordinator's own, or one made for the calls: a loop thread and a pool of ``POOL_THREADS`` that
open the connections), so the threads used do not depend on the number of workers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pyrocluster.config import Settings
from pyrocluster.coordinator.channel import Channel
from pyrocluster.coordinator.wire import Wire

Answer = tuple[Any, "BaseException | None"]
"""``(result, None)``, or ``(None, what went wrong)``: refused, timed out, or what the peer raised."""


class NoAnswer(Exception):
    """The call got no callback within the overall wait (its connection never got through)."""


class KeptChannels:
    """Connections kept from one round of calls to the next (a coordinator's ``status``), so a
    round to the same objects costs no new handshakes; rounds on one of these take turns."""

    def __init__(self) -> None:
        self.turn = threading.Lock()
        self._by_uri: dict[str, Channel] = {}

    def take(self, uris: list[str], settings: Settings, timeout_s: float) -> list[Channel]:
        """A channel per URI: the kept one when it is free, else a new one (kept from now on).

        Channels to URIs not asked for this round are closed: their objects left the cluster.
        """
        out: list[Channel] = []
        fresh: dict[str, Channel] = {}
        for uri in uris:
            channel = self._by_uri.pop(uri, None)
            if channel is None or channel.busy:
                channel = Channel(uri, settings, connect_timeout_s=timeout_s)
            fresh.setdefault(uri, channel)
            out.append(channel)
        self.close()
        self._by_uri = fresh
        return out

    def close(self) -> None:
        """Close every kept connection."""
        for channel in self._by_uri.values():
            channel.release()
        self._by_uri = {}


OnAnswer = Callable[[int, Answer], None]
"""Told each answer as it comes: the target's index and the answer."""


def call_each(
    settings: Settings,
    targets: list[tuple[str, str]],
    timeout_s: float,
    wire: Wire | None = None,
    kept: KeptChannels | None = None,
    on_answer: OnAnswer | None = None,
    over: threading.Event | None = None,
) -> list[Answer]:
    """``method()`` on each ``(uri, method)`` at once; answers in order, each within ``timeout_s``.

    On ``wire`` (a coordinator's own) when given, else on a wire made for these calls; on the
    connections ``kept`` from the last round when given, else on new ones closed after. A
    connection attempt counts against the same ``timeout_s``; anything still out after twice
    that (connections queued behind silent peers) is answered with :class:`NoAnswer`.
    ``on_answer`` hears each answer as it comes (on the wire's threads: it must not block). ``over``
    is set here once every answer is in; a caller that sets it first ends the round early, the
    calls still out answered with :class:`NoAnswer`.
    """
    if not targets:
        return []
    if kept is None:
        return _round(settings, targets, timeout_s, wire, None, on_answer, over)
    with kept.turn:
        return _round(settings, targets, timeout_s, wire, kept, on_answer, over)


def _round(
    settings: Settings,
    targets: list[tuple[str, str]],
    timeout_s: float,
    wire: Wire | None,
    kept: KeptChannels | None,
    on_answer: OnAnswer | None,
    over: threading.Event | None,
) -> list[Answer]:
    answers: list[Answer | None] = [None] * len(targets)
    lock = threading.Lock()
    remaining = [len(targets)]
    all_in = over if over is not None else threading.Event()
    own = wire is None
    on = Wire("fanout") if wire is None else wire
    uris = [uri for uri, _ in targets]
    if kept is None:
        channels = [Channel(uri, settings, connect_timeout_s=timeout_s) for uri in uris]
    else:
        channels = kept.take(uris, settings, timeout_s)

    def answered(i: int) -> Any:
        def done(result: Any, exc: BaseException | None) -> None:
            with lock:
                answers[i] = (result, exc)
                remaining[0] -= 1
                if remaining[0] == 0:
                    all_in.set()
            if on_answer is not None:
                on_answer(i, (result, exc))

        return done

    try:
        for i, (channel, (_, method)) in enumerate(zip(channels, targets, strict=True)):
            on.call(channel, method, (), answered(i), timeout_s)
        all_in.wait(2 * timeout_s + 0.5)
    finally:
        if own:
            on.close()
        if kept is None:
            for channel in channels:
                channel.release()
    with lock:
        return [a if a is not None else (None, NoAnswer("no answer in time")) for a in answers]
