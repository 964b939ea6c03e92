"""Start a real ``pyrocluster dashboard`` process for a test and talk HTTP to it."""

from __future__ import annotations

import httpx

from pyrocluster.local import ManagedProcess


def start_dashboard(
    processes, ns: str, *args: str, env: dict[str, str] | None = None
) -> tuple[ManagedProcess, str]:
    """``pyrocluster dashboard --ns NS --port 0 ARGS``; the process and its base URL (ending ``/``)."""
    proc = processes.add(ManagedProcess(["dashboard", "--ns", ns, "--port", "0", *args], env))
    line = proc.wait_ready()
    url = next(word for word in line.split() if word.startswith("http://"))
    return proc, url


def get(url: str, path: str, timeout: float = 5.0, **kw) -> httpx.Response:
    """One GET (no redirects followed), bounded."""
    return httpx.get(url.rstrip("/") + path, timeout=timeout, follow_redirects=False, **kw)
