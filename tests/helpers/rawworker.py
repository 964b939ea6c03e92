"""A coordinator's view of one worker through the raw v2 protocol (docs/protocol.md), for tests."""

from __future__ import annotations

import itertools
from typing import Any

from pyrocluster import auth, codec, config
from pyrocluster.config import Settings
from pyrocluster.nameserver import registry


class RawWorker:
    """Proxies to a worker's compute and control objects; ``call`` builds v2 requests."""

    def __init__(self, ns: str, worker: str, serializer: str = "msgpack", sender: str = "test-coord") -> None:
        self.settings = Settings(serializer=serializer).with_ns(ns)
        config.apply(self.settings)
        proxy = registry.connect(self.settings)
        try:
            (self.entry,) = [w for w in registry.find_workers(proxy) if w.name == worker]
        finally:
            proxy._pyroRelease()
        self.sender = sender
        self._ids = itertools.count()

    def proxy(self, service: str, timeout_s: float = 60.0) -> Any:
        """A new proxy (proxies belong to one thread)."""
        config.apply(self.settings)
        return auth.make_proxy(self.entry.uris[service], self.settings, timeout_s=timeout_s)

    def call(
        self, name: str, *args: Any, timeout: float = 30.0, priority: int = 0, **kwargs: Any
    ) -> list[Any]:
        """One ``[call_id, name, payload, timeout_s, priority]`` call with a fresh id."""
        return [str(next(self._ids)), name, codec.pack_call(args, kwargs), timeout, priority]

    def run_batch(self, calls: list[list[Any]], sender: str | None = None) -> dict[str, Any]:
        """Send one batch and wait for its reply."""
        with self.proxy("compute") as proxy:
            return proxy.run_batch({"from": sender or self.sender, "calls": calls})

    def run_columns(
        self, name: Any, payloads: list[Any], timeout: Any = 30.0, priority: Any = 0, **extra: Any
    ) -> dict[str, Any]:
        """Send one batch of calls as columns (fresh ids, or ``extra``'s) and wait for its reply."""
        ids = [str(next(self._ids)) for _ in payloads]
        request = {"from": self.sender, "task": name, "ids": ids, "payloads": payloads, "timeout": timeout}
        with self.proxy("compute") as proxy:
            return proxy.run_batch({**request, "priority": priority, **extra})

    def cancel(self, call_ids: list[str], sender: str | None = None) -> int:
        """Cancel calls by id."""
        with self.proxy("compute", timeout_s=10) as proxy:
            return int(proxy.cancel(sender or self.sender, call_ids))

    def load(self) -> dict[str, int]:
        """The worker's LOAD."""
        with self.proxy(registry.CONTROL, timeout_s=10) as proxy:
            return dict(proxy.load())

    def info(self) -> dict[str, Any]:
        """``control.info()``."""
        with self.proxy(registry.CONTROL, timeout_s=10) as proxy:
            return dict(proxy.info())


def decoded(outcome: list[Any]) -> tuple[int, Any]:
    """``(kind, value)`` of one outcome, its value decoded."""
    kind, value, _ms = outcome
    return kind, None if value is None else codec.unpack(codec.as_bytes(value))


def outcomes_of(reply: dict[str, Any]) -> list[list[Any]]:
    """A reply's outcomes, whether it came as rows or in columns."""
    if "kinds" in reply:
        kinds = codec.as_bytes(reply["kinds"])
        return list(map(list, zip(kinds, reply["values"], reply["elapsed"], strict=True)))
    return list(reply["outcomes"])
