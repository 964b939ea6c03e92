"""Resources a worker has and a call asks for (SPEC 10): parsing, the fit, and patience.

Pure code, no sockets, no threads; the one clock (:class:`Patience`) is injected.

An *ask* is a plain ``{name: amount}`` dict. A call asks ``cpu: 1`` unless it names ``cpu``
itself; :func:`full_ask` adds that default. ``gpu`` is the count of a worker's device ids;
``memory`` is in bytes. Amounts are non-negative numbers (a resource asked ``0`` is not needed).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

NAME = re.compile(r"[a-z][a-z0-9_.-]*\Z")
"""A resource name."""
CPU, MEMORY, GPU = "cpu", "memory", "gpu"
UNITS = {
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "b": 1,
}
"""Memory units (case-insensitive)."""
_AMOUNT = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*\Z")
MAX_AMOUNT = 2.0**62
"""Largest amount accepted (beyond any real machine, below float's exact integers' end)."""
PATIENCE_S = 2.0
"""Seconds a waiting call that does not fit may be passed over by smaller ones that do."""

Ask = dict[str, float]
DEFAULT_ASK: Ask = {CPU: 1.0}
"""What a call that names no resource asks."""


def parse_amount(name: str, value: Any) -> float:
    """One amount: a number, or for ``memory`` a string with a unit (``32GiB``); ValueError if bad."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: {value!r} is not an amount")
    if isinstance(value, (int, float)):
        amount = float(value)
    elif isinstance(value, str):
        match = _AMOUNT.match(value)
        if match is None:
            raise ValueError(f"{name}: {value!r} is not an amount")
        unit = match.group(2).lower()
        if unit and (name != MEMORY or unit not in UNITS):
            allowed = "KiB MiB GiB KB MB GB" if name == MEMORY else "no unit"
            raise ValueError(f"{name}: unknown unit {match.group(2)!r} ({allowed})")
        amount = float(match.group(1)) * UNITS.get(unit, 1)
    else:
        raise ValueError(f"{name}: {value!r} is not an amount")
    if not 0 <= amount <= MAX_AMOUNT:
        raise ValueError(f"{name}: {value!r} is out of range (0 to {MAX_AMOUNT:g})")
    if name == GPU and not amount.is_integer():  # a call holds whole devices, never a share of one
        raise ValueError(f"{name}: {value!r} is not a whole number of devices")
    return amount


def parse_mapping(items: Mapping[Any, Any]) -> Ask:
    """Validate ``{name: amount}``; ValueError naming the bad name or amount."""
    out: Ask = {}
    for name, value in items.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise ValueError(f"{name!r} is not a resource name ([a-z][a-z0-9_.-]*)")
        out[name] = parse_amount(name, value)
    return out


def parse_spec(text: str) -> Ask:
    """``cpu=8,memory=32GiB,licence=2`` as a dict; ValueError naming the bad part."""
    items: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"{part.strip()!r} is not name=amount")
        items[name.strip()] = value
    return parse_mapping(items)


def full_ask(ask: Mapping[str, float] | None) -> Ask:
    """The ask with its default: ``cpu: 1`` unless ``cpu`` is named; zero amounts dropped."""
    out = dict(DEFAULT_ASK)
    if ask:
        out.update(ask)
    return {k: v for k, v in out.items() if v > 0}


def frozen(ask: Mapping[str, float] | None) -> tuple[tuple[str, float], ...]:
    """A hashable form of an ask (the coordinator's queue key, what travels with each call):
    () for the default, so an explicit ``cpu: 1`` costs nothing on the wire; else the ask with
    ``cpu`` named (zeros kept: ``cpu: 0`` must not turn into the default)."""
    if not ask:
        return ()
    full = {CPU: 1.0, **ask}
    return () if full == DEFAULT_ASK else tuple(sorted(full.items()))


@functools.lru_cache(maxsize=1024)
def thawed(frozen_ask: tuple[tuple[str, float], ...]) -> Ask:
    """The full ask of a frozen one (:func:`frozen`), made once per distinct ask: the coordinator
    reads it for every worker it considers (do not change the dict returned)."""
    return full_ask(dict(frozen_ask))


def fits(ask: Mapping[str, float], free: Mapping[str, float]) -> bool:
    """True when every amount asked is at most what is free (a resource not offered is 0)."""
    return all(amount <= free.get(name, 0.0) for name, amount in ask.items())


def shortfall(ask: Mapping[str, float], totals: Iterable[Mapping[str, float]]) -> tuple[str, float] | None:
    """When no totals fit ``ask``: a resource asked more of than any worker has, and the largest
    amount any has; None when some fit (or when each resource alone fits some worker, the
    first of the ask with the largest amount)."""
    totals = list(totals)
    if any(fits(ask, t) for t in totals):
        return None
    for name, amount in sorted(ask.items()):
        largest = max((t.get(name, 0.0) for t in totals), default=0.0)
        if amount > largest:
            return name, largest
    name = sorted(ask)[0]
    return name, max((t.get(name, 0.0) for t in totals), default=0.0)


def unfit_reason(task: str, ask: Mapping[str, float], totals: Iterable[Mapping[str, float]]) -> str | None:
    """Why no worker of ``totals`` could ever run ``task`` asking ``ask``; None when one could."""
    totals = list(totals)
    over = shortfall(ask, totals)
    if over is None:
        return None
    name, largest = over
    if ask[name] <= largest:  # each alone fits some worker, not all of them one worker
        short = [n for n in sorted(ask) if any(t.get(n, 0.0) < ask[n] for t in totals)]
        both = " and ".join(f"{show(n, ask[n])} {n}" for n in short)
        return f"task {task!r} asks {both} together, which no one live worker has (each lacks one of them)"
    return (
        f"task {task!r} asks {show(name, ask[name])} {name}, more than any live worker has "
        f"(the largest: {show(name, largest)})"
    )


def units_free(ask: Mapping[str, float], totals: Mapping[str, float], used: Mapping[str, float]) -> float:
    """How many more calls of ``ask`` what is free (totals minus used) would hold (the ranking of
    workers; called per worker considered, so no dict is built)."""
    most = float("inf")
    for name, amount in ask.items():
        if amount > 0:
            count = (totals.get(name, 0.0) - used.get(name, 0.0)) / amount
            if count < most:
                most = count
    return most


def show(name: str, amount: float) -> str:
    """An amount for people: memory in the largest binary unit that divides it, else a number."""
    if name == MEMORY and amount >= 1024:
        for unit in ("TiB", "GiB", "MiB", "KiB"):
            size = UNITS[unit.lower()]
            if amount >= size:
                return f"{amount / size:.4g}{unit}"
    return f"{amount:g}"


class Patience:
    """How long a call that does not fit may be passed over by calls that do.

    The worker starts waiting calls in its fair order (:class:`~pyrocluster.slots.admission.
    AdmissionOrder`); one whose ask does not fit what is free is skipped for one that fits, but
    only while it has waited under ``patience_s``: after that nothing behind it in that order
    starts until it fits, so a big ask is never starved by a stream of small ones.
    """

    def __init__(self, patience_s: float = PATIENCE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.patience_s = patience_s
        self.clock = clock

    def may_pass(self, waiting_since: float) -> bool:
        """True while a call that has waited since ``waiting_since`` may still be passed over."""
        return self.clock() - waiting_since < self.patience_s
