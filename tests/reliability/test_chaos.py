"""Chaos soak, bounded: 3,000 tasks while a seeded schedule kills, pauses and restarts workers.

The soak itself lives in ``bench/chaos_soak.py`` (run it by hand for as long as you like); this
runs about twelve seconds of it on loopback, an event every 0.5-1.5 s (as many events as twenty
seconds at the soak's default pace), and checks the promise: every task ends with exactly one
``ok`` line, none lost, none recorded twice.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SOAK_FILE = Path(__file__).parents[2] / "bench" / "chaos_soak.py"
SEED = 7
"""The schedule's seed (the same seed draws the same sequence of events)."""


def load_soak():
    """``bench/chaos_soak.py`` as a module (bench is a folder of scripts, not necessarily a package)."""
    spec = importlib.util.spec_from_file_location("pyrocluster_chaos_soak", SOAK_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_chaos_soak_loses_and_duplicates_nothing(tmp_path):
    soak = load_soak()
    figures = soak.run_soak(
        12, seed=SEED, tasks=3000, task_ms=25, workers=4, slots=4, every=(0.5, 1.5), workdir=tmp_path
    )
    report = figures.line() + "\n" + "\n".join(figures.events)
    print(f"\nchaos figures: {figures.line()}")
    assert figures.exit_code == 0, report
    assert figures.lost == 0 and figures.failed == 0, report
    assert figures.duplicated == 0, report
    assert figures.kills >= 2 and figures.pauses >= 1 and figures.restarts >= 1, report
