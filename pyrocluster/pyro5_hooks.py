"""The Pyro5 internals pyrocluster overrides, and the start-up check that each one is still there.

Our security rests on a few private parts of Pyro5 (tested with the versions pinned in
``pyproject.toml``). If an upgrade renamed one of them, our override would silently stop being
called: the handshake timeout or the decompression guard would be off while everything seemed
to work. So every process checks, before its first daemon or proxy, that Pyro5 still has each
hook *and still calls it*, and refuses to start otherwise (:class:`Pyro5Incompatible`, exit 2).

Each check looks at Pyro5's code objects (the names a function reads or calls), so it is cheap
and needs no connection.
"""

from __future__ import annotations

import inspect
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import Pyro5
import Pyro5.client
import Pyro5.protocol
import Pyro5.serializers
import Pyro5.server
import Pyro5.socketutil
import Pyro5.svr_threads

from pyrocluster.errors import ConfigError


class Pyro5Incompatible(ConfigError):
    """The installed Pyro5 lacks a hook pyrocluster overrides: running would be unguarded."""


def _code_names(obj: Any) -> set[str]:
    """Every global, attribute and method name the code of ``obj`` uses, nested functions included."""
    func = inspect.unwrap(obj) if callable(obj) else obj
    code = getattr(func, "__code__", None)
    names: set[str] = set()
    stack = [code] if isinstance(code, types.CodeType) else []
    while stack:
        current = stack.pop()
        names.update(current.co_names)
        stack.extend(const for const in current.co_consts if isinstance(const, types.CodeType))
    return names


def _functions_of(module: types.ModuleType) -> Iterator[Any]:
    """The functions of ``module`` and the methods of its classes."""
    for value in vars(module).values():
        if inspect.isfunction(value):
            yield value
        elif inspect.isclass(value) and value.__module__ == module.__name__:
            yield from (v for v in vars(value).values() if inspect.isfunction(v))


def _module_uses(module: types.ModuleType, name: str) -> bool:
    return any(name in _code_names(func) for func in _functions_of(module))


def _params(func: Any) -> list[str]:
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return []


def _method(cls: type, name: str, params: tuple[str, ...]) -> str | None:
    """Problem with ``cls.name`` (missing, or without the parameters we pass), or None."""
    func = getattr(cls, name, None)
    if not callable(func):
        return f"{cls.__module__}.{cls.__qualname__}.{name} is gone"
    missing = [p for p in params if p not in _params(func)]
    if missing:
        return f"{cls.__qualname__}.{name} no longer takes {', '.join(missing)}"
    return None


def _called_by(what: str, name: str, *modules: types.ModuleType) -> str | None:
    if not all(_module_uses(module, name) for module in modules):
        names = ", ".join(m.__name__ for m in modules)
        return f"{names} no longer call(s) {what}"
    return None


def _uses(owner: Any, attr: str, name: str, otherwise: str) -> str | None:
    """``otherwise`` unless the code of ``owner.attr`` uses ``name``."""
    func = getattr(owner, attr, None)
    return None if func is not None and name in _code_names(func) else otherwise


def _first(*problems: str | None) -> str | None:
    return next((p for p in problems if p), None)


def _daemon_handshake() -> str | None:
    daemon = Pyro5.server.Daemon
    return _first(
        _method(daemon, "_handshake", ("conn", "denied_reason")),
        _called_by("Daemon._handshake", "_handshake", Pyro5.svr_threads),
        _uses(daemon, "_handshake", "validateHandshake", "Daemon._handshake skips validateHandshake"),
        _method(daemon, "validateHandshake", ("conn", "data")),
    )


def _daemon_housekeeping() -> str | None:
    return _first(
        _method(Pyro5.server.Daemon, "_housekeeping", ()),
        _called_by("Daemon._housekeeping", "_housekeeping", Pyro5.svr_threads),
    )


def _proxy_connect() -> str | None:
    proxy = Pyro5.client.Proxy
    create = "_Proxy__pyroCreateConnection"
    problem = _method(proxy, create, ("replaceUri", "connected_socket"))
    if problem:
        return problem
    return _first(
        _uses(proxy, create, "_pyroHandshake", "Proxy.__pyroCreateConnection no longer sends _pyroHandshake"),
        _uses(proxy, create, "_pyroValidateHandshake", "Proxy no longer calls _pyroValidateHandshake"),
        _method(proxy, "_pyroValidateHandshake", ("response",)),
        _uses(proxy, "_pyroBind", create, "Proxy._pyroBind bypasses __pyroCreateConnection"),
    )


def _message_payload() -> str | None:
    message = Pyro5.protocol.ReceivingMessage
    if not isinstance(getattr(Pyro5.protocol, "FLAGS_COMPRESSED", None), int):
        return "Pyro5.protocol.FLAGS_COMPRESSED is gone"
    payload = getattr(message, "add_payload", None)
    if not callable(payload):
        return "Pyro5.protocol.ReceivingMessage.add_payload is gone"
    original = getattr(payload, "pyrocluster_original", payload)  # our guard wraps Pyro5's
    return _first(
        None if "decompress" in _code_names(original) else "Pyro5 inflates messages outside add_payload",
        _called_by("ReceivingMessage.add_payload", "add_payload", Pyro5.protocol),
    )


def _tls_contexts() -> str | None:
    names = ("__ssl_server_context", "__ssl_client_context")
    if not all(hasattr(Pyro5.socketutil, name) for name in names):
        return "Pyro5.socketutil no longer caches its TLS contexts in __ssl_server/client_context"
    if not set(names) <= _code_names(getattr(Pyro5.socketutil, "get_ssl_context", None)):
        return "Pyro5.socketutil.get_ssl_context no longer uses its cached contexts"
    return None


def _serializer_tables() -> str | None:
    by_id = getattr(Pyro5.serializers, "serializers_by_id", None)
    by_name = getattr(Pyro5.serializers, "serializers", None)
    if not isinstance(by_id, dict) or not isinstance(by_name, dict):
        return "Pyro5.serializers.serializers / serializers_by_id are gone"
    return _called_by("serializers_by_id", "serializers_by_id", Pyro5.server, Pyro5.client)


HOOKS: dict[str, tuple[str, Callable[[], str | None]]] = {
    "Daemon._handshake": ("bounds an unauthenticated connect in time and size", _daemon_handshake),
    "Daemon._housekeeping": ("drops connections whose handshake is late", _daemon_housekeeping),
    "Proxy.__pyroCreateConnection": ("sends and checks the cluster-secret handshake", _proxy_connect),
    "ReceivingMessage.add_payload": ("refuses compressed messages (decompression bombs)", _message_payload),
    "socketutil.__ssl_*_context": ("installs our mutual-TLS contexts", _tls_contexts),
    "serializers.serializers_by_id": ("refuses to decode marshal and json", _serializer_tables),
}
"""Every Pyro5 internal we override: name -> (what our override guards, its check)."""


def problems() -> list[str]:
    """One line per hook that is not in place in the installed Pyro5 (empty when all are)."""
    found = []
    for name, (purpose, check) in HOOKS.items():
        try:
            problem = check()
        except Exception as exc:  # an odd Pyro5 makes the check itself fail: that is a finding too
            problem = f"cannot inspect it ({type(exc).__name__}: {exc})"
        if problem:
            found.append(f"{name} (it {purpose}): {problem}")
    return found


def check() -> None:
    """Raise :class:`Pyro5Incompatible` naming every hook that is not in place."""
    found = problems()
    if found:
        raise Pyro5Incompatible(
            f"Pyro5 {Pyro5.__version__} is not compatible with this pyrocluster (install the version"
            f" pinned in its requirements); missing: {'; '.join(found)}"
        )


_checked = False
_checked_lock = threading.Lock()


def ensure() -> None:
    """:func:`check` once per process (every later call is free)."""
    global _checked
    if _checked:
        return
    with _checked_lock:
        if not _checked:
            check()
            _checked = True
