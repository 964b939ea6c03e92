"""The ``@task`` decorator, the task registry, the built-in tasks and running one call."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

from pyrocluster.errors import ConfigError
from pyrocluster.protocol import ERROR, OK, UNKNOWN_TASK

F = TypeVar("F", bound=Callable[..., Any])

REGISTRY: dict[str, Callable[..., Any]] = {}
"""Every task this process can run, by name."""


@overload
def task(func: F, /) -> F: ...
@overload
def task(*, name: str | None = None) -> Callable[[F], F]: ...


def task(func: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
    """Register a function as a compute task, under its own name or ``name``."""

    def register(f: F) -> F:
        REGISTRY[name or f.__name__] = f
        return f

    return register(func) if func is not None else register


def _import_here(module: str) -> None:
    """Import ``module``; one that sits in the current directory is found there too, as ``python -m``
    and Celery's ``-A`` find it (``--tasks mytasks`` beside ``mytasks.py``)."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.partition(".")[0]
        here = Path.cwd()
        if exc.name != top or not ((here / f"{top}.py").is_file() or (here / top / "__init__.py").is_file()):
            raise
        sys.path.insert(0, str(here))
        importlib.import_module(module)


def load_task_module(spec: str) -> None:
    """Import a tasks module by import path or ``.py`` file; ConfigError says what failed."""
    try:
        if spec.endswith(".py") or "/" in spec or "\\" in spec:
            path = Path(spec).resolve()
            if not path.is_file():
                raise ConfigError(f"--tasks {spec}: no such file")
            mod_name = "pyrocluster_user_" + re.sub(r"\W", "_", path.stem)
            loader_spec = importlib.util.spec_from_file_location(mod_name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise ConfigError(f"--tasks {spec}: not a Python file")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module
            loader_spec.loader.exec_module(module)
        else:
            _import_here(spec)
    except ConfigError:
        raise
    except (Exception, SystemExit) as exc:  # any import-time failure of user code is reported, not raised
        raise ConfigError(f"--tasks {spec}: cannot import: {type(exc).__name__}: {exc}") from None


def error_info(exc: BaseException) -> dict[str, str]:
    """An exception a task raised, caught where its runner called it, as the plain dict that
    travels back: type, message, and the traceback from the task's own frames (the runner's
    frame is left out: it says nothing to the user, and its length would depend on where
    pyrocluster is installed)."""
    tb = exc.__traceback__
    return {
        "type": type(exc).__name__,
        "message": _sendable(_message(exc)),
        "traceback": _sendable(
            "".join(traceback.format_exception(type(exc), exc, tb.tb_next if tb else None))
        ),
    }


def _message(exc: BaseException) -> str:
    """``str(exc)``, or what its ``__str__`` raised instead: the call still fails with its type."""
    try:
        return str(exc)
    except Exception as failed:  # format_exception_only never raises, whatever ``failed`` is
        return f"<str() raised {''.join(traceback.format_exception_only(failed)).strip()}>"


def _sendable(text: str) -> str:
    """``text`` with lone surrogates (a file name decoded with surrogateescape) as ``\\udcXX``
    escapes: UTF-8 cannot carry them, and the error must travel."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def failure(kind: int, type_name: str, message: str) -> list[Any]:
    """A ``[kind, error dict, 0.0]`` outcome with no traceback, for failures outside a task."""
    return [kind, {"type": type_name, "message": message, "traceback": ""}, 0.0]


def unknown_task(name: Any) -> list[Any]:
    """The UNKNOWN_TASK outcome of a call to a task this process does not offer."""
    if isinstance(name, str):
        return failure(UNKNOWN_TASK, "UnknownTask", f"unknown task {name[:200]!r}")
    return failure(ERROR, "InvalidCall", "task name must be a string")


def run_call(name: str, args: Any, kwargs: Any) -> list[Any]:
    """Run one registered task; return ``[kind, value, elapsed_ms]`` and never raise."""
    start = time.perf_counter()
    func = REGISTRY.get(name) if isinstance(name, str) else None
    if func is None:
        return unknown_task(name)
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        return failure(ERROR, "TypeError", "args must be a list and kwargs a dict")
    try:
        value = func(*args, **kwargs)
    except BaseException as exc:  # a task's SystemExit or KeyboardInterrupt fails that call alone
        return [ERROR, error_info(exc), (time.perf_counter() - start) * 1000.0]
    return [OK, value, (time.perf_counter() - start) * 1000.0]


# ---- built-in tasks ---------------------------------------------------------------------------

MAX_PRIME_RANGE = 50_000_000
"""Widest ``[lo, hi)`` that ``count_primes`` accepts."""
MAX_FIB_N = 20_000
"""Largest ``fib`` argument: its result (4,180 digits) still crosses the wire as a number."""
MAX_SLEEP_S = 3600.0
"""Longest ``sleep`` accepted, in seconds."""


@task
def add(a: Any, b: Any) -> Any:
    """Return ``a + b``."""
    return a + b


@task
def echo(x: Any) -> Any:
    """Return ``x`` unchanged."""
    return x


@task
def sleep(seconds: float) -> float:
    """Sleep ``seconds`` and return them."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        raise TypeError("seconds must be a number")
    if not 0 <= seconds <= MAX_SLEEP_S:
        raise ValueError(f"seconds must be between 0 and {MAX_SLEEP_S:g}")
    time.sleep(seconds)
    return seconds


@task
def count_primes(lo: int, hi: int) -> int:
    """Count the primes in ``[lo, hi)``."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)):
        raise TypeError("lo and hi must be integers")
    if hi - lo > MAX_PRIME_RANGE:
        raise ValueError(f"range wider than {MAX_PRIME_RANGE}")
    lo = max(lo, 2)
    if hi <= lo:
        return 0
    limit = int(hi**0.5) + 1
    small = bytearray([1]) * (limit + 1)
    small[0:2] = b"\x00\x00"
    for i in range(2, int(limit**0.5) + 1):
        if small[i]:
            small[i * i :: i] = bytearray(len(small[i * i :: i]))
    segment = bytearray([1]) * (hi - lo)
    for p in range(2, limit + 1):
        if small[p]:
            start = max(p * p, (lo + p - 1) // p * p)
            if start < hi:
                segment[start - lo :: p] = bytearray(len(segment[start - lo :: p]))
    return sum(segment)


@task
def fib(n: int) -> int:
    """Return the ``n``-th Fibonacci number (fib(0) = 0)."""
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_FIB_N:
        raise ValueError(f"n must be an integer between 0 and {MAX_FIB_N}")
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


@task
def sha256(text: str) -> str:
    """Return the hex SHA-256 digest of ``text`` (UTF-8)."""
    if not isinstance(text, (str, bytes)):
        raise TypeError("text must be a string")
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


@task
def fail(message: str) -> None:
    """Raise ``RuntimeError(message)``."""
    raise RuntimeError(message)


@task
def word_count(text: str) -> dict[str, int]:
    """Count the whitespace-separated words of ``text``."""
    if not isinstance(text, str):
        raise TypeError("text must be a string")
    counts: dict[str, int] = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return counts
