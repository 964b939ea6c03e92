"""Tasks that raise, for the tests of how remote errors arrive."""

from __future__ import annotations

from typing import Any

from pyrocluster import task


@task
def divide(a: float, b: float) -> float:
    return a / b


@task
def lookup(mapping: dict[str, Any], key: str) -> Any:
    return mapping[key]


@task
def raise_named(name: str, message: str) -> None:
    raise type(name, (Exception,), {})(message)


@task
def decode(data: bytes) -> str:
    return data.decode("utf-8")


@task
def leave(path: str, how: str) -> None:
    """Note the run in ``path``, then raise SystemExit or KeyboardInterrupt, as a script might."""
    with open(path, "a") as f:
        f.write("ran\n")
    raise SystemExit(3) if how == "exit" else KeyboardInterrupt()
