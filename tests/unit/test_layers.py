"""The package's layers: the coordinator never imports the layers built on it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pyrocluster

PACKAGE = Path(pyrocluster.__file__).parent
ABOVE_THE_COORDINATOR = ("pyrocluster.jobs", "pyrocluster.scheduler", "pyrocluster.cli", "pyrocluster.web")


def _module_level_imports(path: Path) -> set[str]:
    """Modules a file imports at module level (not inside functions)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def _imports_from_above_the_coordinator(package: str) -> set[str]:
    """``file: module`` for each module-level import of ``package`` from a layer above the coordinator."""
    return {
        f"{path.name}: {name}"
        for path in (PACKAGE / package).glob("*.py")
        for name in _module_level_imports(path)
        if name.startswith(ABOVE_THE_COORDINATOR) or name == "pyrocluster.local"
    }


def test_the_coordinator_imports_nothing_from_the_layers_above_it():
    assert not _imports_from_above_the_coordinator("coordinator")


def test_the_crawl_package_imports_nothing_from_the_layers_above_the_coordinator():
    assert not _imports_from_above_the_coordinator("crawl")


def test_the_outcome_kinds_live_in_the_protocol_module_only():
    for path in PACKAGE.rglob("*.py"):
        if path.name == "protocol.py":
            continue
        tree = ast.parse(path.read_text())
        assigned = {
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            for t in (target.elts if isinstance(target, ast.Tuple) else [target])
            if isinstance(t, ast.Name)
        }
        assert not assigned & {"OK", "ERROR", "TIMEOUT", "NOT_RUN", "CANCELLED"}, path


def test_importing_the_api_loads_no_scheduler_and_no_process_management():
    probe = (
        "import sys; from pyrocluster import Cluster; "
        "print(sorted(m for m in sys.modules if m.startswith(('pyrocluster.scheduler', 'cronsim', "
        "'pyrocluster.local', 'pyrocluster.jobs'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
