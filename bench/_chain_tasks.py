"""Tasks of ``bench/value_chain.py``: an array made, then passed on from task to task."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyrocluster import task


@task
def make_array(mib: int) -> Any:
    return np.ones(mib * 131072, dtype=np.float64)


@task
def next_array(values: Any) -> Any:
    """A new array of the same size (each link of the chain passes a fresh value)."""
    return values + 1.0
