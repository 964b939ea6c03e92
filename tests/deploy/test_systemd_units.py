"""The systemd units in deploy/systemd: they verify, and they say what the operator relies on."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyrocluster.defaults import DEFAULT_DRAIN_TIMEOUT_S
from pyrocluster.scheduler.service import CANCEL_GRACE_S

UNITS = Path(__file__).parents[2] / "deploy" / "systemd"
NAMES = (
    "pyrocluster-nameserver.service",
    "pyrocluster-worker@.service",
    "pyrocluster-scheduler.service",
    "pyrocluster-dashboard.service",
)
INSTALLED = "/opt/pyrocluster/bin/pyrocluster"
CONFIG = "/etc/pyrocluster/pyrocluster.toml"


def read_unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read(UNITS / name)
    return unit


@pytest.mark.parametrize("name", NAMES)
def test_unit_is_a_hardened_notify_service_reading_the_shared_config(name: str) -> None:
    service = read_unit(name)["Service"]
    assert service["Type"] == "notify" and int(service["WatchdogSec"]) > 0
    assert service["ExecStart"].startswith(f"{INSTALLED} ") and f"--config {CONFIG}" in service["ExecStart"]
    assert (service["User"], service["NoNewPrivileges"], service["ProtectSystem"]) == (
        "pyrocluster",
        "yes",
        "strict",
    )
    drain = {
        "pyrocluster-worker@.service": DEFAULT_DRAIN_TIMEOUT_S,
        "pyrocluster-scheduler.service": DEFAULT_DRAIN_TIMEOUT_S + CANCEL_GRACE_S,
    }.get(name, 0.0)
    assert float(service["TimeoutStopSec"]) > drain  # systemd must not kill a drain that is on time
    if name == "pyrocluster-worker@.service":
        assert "--name %i" in service["ExecStart"]


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    installed = Path(sys.executable).parent / "pyrocluster"  # the console script of the test's venv
    assert installed.exists(), installed
    copies = []
    for name in NAMES:
        text = (UNITS / name).read_text().replace(INSTALLED, str(installed))
        copy = tmp_path / name.replace("@.", "@w1.")  # a template verifies as one of its instances
        copy.write_text(text)
        copies.append(str(copy))
    done = subprocess.run(
        [analyze, "verify", "--man=no", *copies], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    complaints = [line for line in done.stderr.splitlines() if str(tmp_path) in line or "ignoring" in line]
    assert not complaints, done.stderr  # an unknown or misspelt key is only a warning to systemd
