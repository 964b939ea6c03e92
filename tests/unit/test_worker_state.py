"""A worker's ``info()`` (what ``status`` asks every worker) stays cheap."""

from __future__ import annotations

import psutil
import pytest

from pyrocluster.services import state as state_module
from pyrocluster.services.state import WorkerState


def test_info_looks_for_slot_processes_at_most_every_refresh_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # children() scans every process of the machine: 100 status calls must not mean 100 scans.
    scans = []
    real = psutil.Process.children

    def counted(self: psutil.Process, *args: object, **kwargs: object) -> list[psutil.Process]:
        scans.append(1)
        return real(self)

    clock = [1000.0]
    monkeypatch.setattr(psutil.Process, "children", counted)
    monkeypatch.setattr(state_module.time, "monotonic", lambda: clock[0])
    ws = WorkerState(name="w", services=["compute"], tags=[], slots=1, pool="thread")
    for _ in range(100):
        assert ws.info()["rss_mb"] > 0
    assert len(scans) == 1
    clock[0] += state_module.CHILDREN_REFRESH_S
    ws.info()
    assert len(scans) == 2
