"""deploy/container/Containerfile and deploy/compose.yaml, checked without a container engine.

No engine can run in CI here (no podman or docker, and building needs a base image from a
registry), so these tests check what can be checked: every command line of the compose file parses
with the real CLI and uses only options the test suite runs, and the image and services keep the
promises of the deploy guide (non-root, entrypoint, /livez health check, secret, drain grace).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from pyrocluster.cli import main

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"
CONTAINERFILE = ROOT / "deploy" / "container" / "Containerfile"


def services() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def option_value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def suite_text() -> str:
    here = Path(__file__).resolve()
    return "\n".join(p.read_text() for p in (ROOT / "tests").rglob("*.py") if p.resolve() != here)


@pytest.mark.parametrize("name", sorted(services()))
def test_every_compose_command_parses_and_uses_options_the_suite_runs(name: str) -> None:
    command = [str(word) for word in services()[name]["command"]]
    with click.Context(main, info_name="pyrocluster") as parent:
        sub = main.get_command(parent, command[0])  # commands load when asked for
        assert sub is not None, command[0]
        sub.make_context(command[0], command[1:], parent=parent)  # a bad option or value raises here
    suite = suite_text()
    for flag in (word for word in command if word.startswith("--")):
        assert re.search(rf"[\"']{re.escape(flag)}[\"']", suite), f"{name}: no test runs {command[0]} {flag}"
    assert re.search(rf"[\"']{command[0]}[\"']", suite)


def test_compose_shares_the_secret_persists_the_name_server_and_leaves_time_to_drain() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert compose["secrets"]["cluster_secret"]["file"]
    every = services()
    assert {"nameserver", "scheduler", "dashboard"} <= every.keys()
    workers = [s for s in every.values() if s["command"][0] == "worker"]
    assert len(workers) == 2
    for service in every.values():
        assert "cluster_secret" in service["secrets"]
        assert service["environment"]["PYROCLUSTER_SECRET_FILE"] == "/run/secrets/cluster_secret"
    ns = every["nameserver"]
    storage = option_value(ns["command"], "--storage")
    assert any(v.split(":")[1] == str(Path(storage).parent) for v in ns["volumes"])  # on a volume
    for worker in workers:
        grace = int(worker["stop_grace_period"].removesuffix("s"))
        assert grace > float(option_value(worker["command"], "--drain-timeout"))


def test_image_is_non_root_runs_pyrocluster_and_checks_livez() -> None:
    text = CONTAINERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["pyrocluster"\]', text, re.M)
    health = re.search(r"^HEALTHCHECK .*\n?.*CMD (.*)$", text, re.M)
    assert health and "/livez" in health.group(1)
    port = re.search(r"127\.0\.0\.1:(\d+)/livez", health.group(1))
    assert port
    for name, service in services().items():  # each service answers the image's check, or has its own
        if "healthcheck" not in service:
            assert option_value(service["command"], "--health-port") == port.group(1), name
