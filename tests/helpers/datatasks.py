"""Tasks that make and check the typed values of SPEC 9, for the data tests."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import time
import uuid
import zoneinfo
from typing import Any

import numpy as np

from pyrocluster import task


def samples() -> dict[str, Any]:
    """One value of every SPEC 9 type that needs no extra (and a frame when pandas is there)."""
    values: dict[str, Any] = {
        "aware": dt.datetime(2026, 12, 1, 3, 0, 4, 5, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin")),
        "offset": dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
        "naive": dt.datetime(2026, 12, 1, 12, 30),
        "date": dt.date(2026, 12, 1),
        "time": dt.time(3, 4, 5, 6),
        "delta": dt.timedelta(days=-1, seconds=5, microseconds=7),
        "money": decimal.Decimal("12.3400"),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "big_endian": np.arange(12, dtype=">i4").reshape(3, 4),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "stamps": np.array(["2026-01-01T00:00", "2026-06-01T12:00"], dtype="datetime64[ns]"),
        "zero_d": np.array(3.5),
        "f64": np.float64(2.5),
        "i8": np.int8(-3),
        "flag": np.bool_(True),
    }
    try:
        import pandas as pd
    except ImportError:
        return values
    values["frame"] = pd.DataFrame(
        {"s": ["a", "b"], "i": [1, 2], "f": [1.5, 2.5], "t": pd.to_datetime(["2026-01-01", "2026-01-02"])}
    )
    values["series"] = pd.Series([1, 2, 3], name="x")
    return values


def same(a: Any, b: Any) -> bool:
    """Same type, equal value (arrays: dtype, shape, memory order and items; frames: equals)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and a.flags.f_contiguous == b.flags.f_contiguous
            and bool(np.array_equal(a, b))
        )
    if hasattr(a, "equals"):
        return bool(a.equals(b))
    return bool(a == b) and getattr(a, "tzinfo", None) == getattr(b, "tzinfo", None)


@task
def make_samples() -> dict[str, Any]:
    return samples()


@task
def check_samples(values: dict[str, Any]) -> list[str]:
    """The names whose value did not arrive as the same type with an equal value."""
    expected = samples()
    return sorted(k for k in expected if k not in values or not same(expected[k], values[k]))


@task
def big_array(mib: int) -> Any:
    return np.arange(mib * 131072, dtype=np.float64)


@task
def array_sum(values: Any) -> float:
    return float(values.sum())


@task
def counted_array(mib: int, runs_file: str) -> Any:
    """``big_array(mib)``, adding a line to ``runs_file`` each time it runs."""
    with open(runs_file, "a") as out:
        out.write("ran\n")
    return np.arange(mib * 131072, dtype=np.float64)


@task
def wait_for_file(path: str, timeout_s: float = 60.0) -> str:
    """Return once ``path`` exists (a task the test lets end); fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.05)
    return path
