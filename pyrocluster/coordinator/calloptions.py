"""The options of calls that are not task arguments (``cluster.options(...)``), checked when set."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyrocluster.coordinator.calls import Ask
from pyrocluster.defaults import MAX_PRIORITY, MAX_TIMEOUT_S
from pyrocluster.resources import frozen, parse_mapping


@dataclass(frozen=True)
class CallOptions:
    """Options of calls that are not task arguments: set with ``cluster.options(...)``."""

    tags: frozenset[str] = frozenset()
    """Only workers carrying every one of these tags run the calls."""
    timeout: float | None = None
    """Seconds per attempt (default: the cluster's ``timeout``)."""
    retries: int | None = None
    """Further attempts after a worker failure (default: the cluster's ``retries``)."""
    priority: int = 0
    """Higher runs first, here and across the coordinators sharing the workers."""
    retry_on_error: bool = False
    """Also retry a call whose task raised or overran its timeout (while retries remain)."""
    resources: Ask = ()
    """What each call asks of its worker, e.g. ``{"memory": "4GiB", "gpu": 1}`` (default ``cpu: 1``)."""

    def changed(
        self,
        tags: Iterable[str] | None,
        timeout: float | None,
        retries: int | None,
        priority: int | None,
        retry_on_error: bool | None,
        resources: Mapping[str, Any] | None,
    ) -> CallOptions:
        """These options with those given (not None) changed; TypeError or ValueError, naming the
        option, for a value no worker would take (a call would otherwise wait ``wait`` to fail)."""
        return CallOptions(
            tag_set(tags) if tags is not None else self.tags,
            timeout_s(timeout) if timeout is not None else self.timeout,
            retry_count(retries) if retries is not None else self.retries,
            _priority(priority) if priority is not None else self.priority,
            _flag(retry_on_error) if retry_on_error is not None else self.retry_on_error,
            _resources(resources) if resources is not None else self.resources,
        )


def tag_set(tags: Iterable[str]) -> frozenset[str]:
    """Tag names as a set; a lone string is refused (``tags="gpu"`` would be the tags g, p and u)."""
    if isinstance(tags, (str, bytes)):
        raise TypeError(f"tags must be a list of tag names (tags=[{tags!r}]), not a string")
    names = frozenset(tags)
    bad = [t for t in names if not isinstance(t, str) or not t]
    if bad:
        raise TypeError(f"tags must be non-empty strings, got {bad[0]!r}")
    return names


def timeout_s(value: Any, name: str = "timeout", *, zero: bool = False) -> float:
    """A duration in seconds: a number in (0, MAX_TIMEOUT_S], or [0, MAX_TIMEOUT_S] with ``zero``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    above_low = value >= 0 if zero else value > 0
    if not above_low or value > MAX_TIMEOUT_S:
        low = "[0" if zero else "(0"
        raise ValueError(f"{name} must be in {low}, {MAX_TIMEOUT_S:g}] seconds, got {value!r}")
    return float(value)


def retry_count(value: Any, name: str = "retries") -> int:
    """Further attempts (or another count): an int of 0 or more."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be 0 or more, got {value}")
    return value


def _priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"priority must be an integer, got {value!r}")
    if abs(value) > MAX_PRIORITY:
        raise ValueError(f"priority must be within ±{MAX_PRIORITY}, got {value}")
    return value


def _resources(value: Any) -> Ask:
    if not isinstance(value, Mapping):
        raise TypeError(
            f"resources must be a mapping of resource name to amount, e.g. {{'gpu': 1}}, got {value!r}"
        )
    return frozen(parse_mapping(value))


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"retry_on_error must be True or False, got {value!r}")
    return value
