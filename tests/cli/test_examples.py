"""The Python quickstart example runs as the README says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.sites import SiteServer

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


def python_blocks(path: Path) -> list[str]:
    """Every ```python block of a Markdown file."""
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_the_readme_python_examples_run_as_written(tmp_path):
    blocks = python_blocks(ROOT / "README.md")
    assert len(blocks) >= 2
    with SiteServer(pages=5) as site:
        for k, code in enumerate(blocks):
            # the one change: the site the crawl lines name is this test's own server
            script = tmp_path / f"block{k}.py"
            script.write_text(code.replace("127.0.0.1:8000", f"127.0.0.1:{site.port}"))
            result = subprocess.run(
                [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
            )
            assert result.returncode == 0, (code, result.stderr)
    assert "/" in site.requests, site.requests  # the crawl lines reached the site
