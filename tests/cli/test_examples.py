"""The Python quickstart example runs as the README says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_quickstart_example_runs_on_a_local_cluster():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result
    assert "add(40, 2) = 42" in result.stdout
    assert "primes below 1,000,000 = 78498" in result.stdout
    assert "fail() raised RuntimeError - on purpose" in result.stdout
