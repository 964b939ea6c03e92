"""Ordinary mistakes and habits at the command line, each answered plainly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import run_cli, wait_for

ROOT = Path(__file__).parents[2]


def test_ctrl_c_ends_status_watch_quietly(nameserver):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyrocluster", "status", "--watch", "0.2", "--json", "--ns", nameserver],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # one JSON document per refresh
        assert first.startswith("{"), first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0 and err == "", err


def test_gitignore_covers_what_the_first_command_leaves(tmp_path):
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "*.results.jsonl" in ignored and "*.run.json" in ignored
