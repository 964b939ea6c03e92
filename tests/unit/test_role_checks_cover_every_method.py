"""Every method a daemon exposes checks the caller's role before it runs (SPEC 13)."""

from __future__ import annotations

import inspect

import pytest

from pyrocluster.crawl.service import CrawlService
from pyrocluster.jobs.announce import JobProgress
from pyrocluster.nameserver.guard import GuardedNameServer
from pyrocluster.services.compute import ComputeService
from pyrocluster.services.control import ControlService
from pyrocluster.services.values import ValuesService


def exposed(cls: type) -> list[str]:
    class_exposed = getattr(cls, "_pyroExposed", False)
    return [
        name
        for name, fn in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and (class_exposed or getattr(fn, "_pyroExposed", False))
    ]


@pytest.mark.parametrize(
    "cls", [ComputeService, ControlService, CrawlService, JobProgress, GuardedNameServer, ValuesService]
)
def test_every_exposed_method_checks_the_role(cls: type) -> None:
    methods = exposed(cls)
    assert methods, cls
    unchecked = [
        name
        for name in methods
        if not hasattr(getattr(cls, name), "pyrocluster_role")
        and "check(" not in inspect.getsource(getattr(cls, name))
    ]
    assert unchecked == [], f"{cls.__name__} exposes methods without a role check: {unchecked}"
