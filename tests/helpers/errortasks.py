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


class Unprintable(Exception):
    """An exception whose ``str()`` itself raises."""

    def __str__(self) -> str:
        raise ValueError("no text for this one")


@task
def raise_unprintable() -> None:
    raise Unprintable("hidden")


@task
def raise_surrogate() -> None:
    """A message holding a lone surrogate (from a file name decoded with surrogateescape)."""
    raise ValueError(b"caf\xe9.txt".decode("utf-8", "surrogateescape"))
