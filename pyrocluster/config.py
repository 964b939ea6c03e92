"""One typed settings object and the defaults; the only writer of ``Pyro5.config``."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from pyrocluster.defaults import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_VALUE_BYTES,
    DEFAULT_NS_HOST,
    DEFAULT_NS_PORT,
    DEFAULT_REPLY_SPIN_S,
)

SAFE_SERIALIZERS = ("msgpack", "serpent")
"""The only serializers any pyrocluster daemon speaks or accepts."""
SERPENT_GROWTH = 4 / 3
"""Serpent sends bytes as base64: a message in serpent is this much larger."""
ENVELOPE_BYTES = 1024 * 1024
"""What a message holding one big value costs besides it (the call or reply around it)."""
MAX_REPLY_SPIN_US = 10_000
"""The longest ``PYROCLUSTER_REPLY_SPIN_US`` (10 ms: past it, sleeping costs less than spinning)."""
MAX_VALUE_LIMIT_BYTES = 2 * 1024**3
"""Largest ``max_value_bytes`` accepted (a Pyro5 message announces its size in 32 bits)."""
MIN_VALUE_LIMIT_BYTES = 1024
"""Smallest ``max_value_bytes`` accepted."""


def is_ip(text: str) -> bool:
    """True for an IPv4 or IPv6 address (no brackets, no port)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_address(text: str, default_port: int = DEFAULT_NS_PORT) -> tuple[str, int]:
    """Split ``HOST:PORT`` (or ``HOST``) into its parts; ValueError when malformed."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host, port_text = port_text, str(default_port)
    host = host.strip("[]")
    if not host:
        raise ValueError(f"{text!r} has no host (expected HOST:PORT)")
    if any(c in host for c in "/@") or any(c.isspace() for c in host) or (":" in host and not is_ip(host)):
        raise ValueError(f"{text!r} is not HOST:PORT (a host name or an IP address, no scheme or URI)")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r} has a port that is not a number (expected HOST:PORT)") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r} has a port outside 0-65535")
    return host, port


def _given_or_read(
    value: str | bytes | None, path: str | os.PathLike[str] | None, what: str, variable: str
) -> str | bytes | None:
    """A credential given, else read from ``path`` (or the file ``<variable>_FILE`` names), else
    ``<variable>`` itself; ValueError for an empty file, OSError for one that cannot be read."""
    if value is None and not path:
        path = os.environ.get(f"{variable}_FILE") or None  # as the CLI's --secret-file/--token-file
    if path:
        text = Path(path).read_bytes().strip()
        if not text:
            raise ValueError(f"{what} file {path} is empty")
        return text
    return value if value is not None else os.environ.get(variable) or None


@dataclass(frozen=True)
class Settings:
    """Connection settings shared by every command and by the Python API."""

    ns_host: str = DEFAULT_NS_HOST
    ns_port: int = DEFAULT_NS_PORT
    secret: bytes | None = None
    token: str | None = None
    """A role token (``tokens.py``), used when there is no secret."""
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    serializer: str = "msgpack"
    debug: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    direct: bool = True
    """Lone calls go straight to a worker's slot process (``slots/direct.py``); off: every call
    goes through the worker's compute object."""
    reply_spin_s: float = DEFAULT_REPLY_SPIN_S
    """How long the thread waiting for a lone call's reply polls before it sleeps, when that call
    is the only one out (``coordinator/wire/replyspin.py``); 0: it sleeps at once."""

    @property
    def wire_cap_bytes(self) -> int:
        """Pyro5's message cap: a message of small values plus one of ``max_value_bytes`` (base64
        in serpent)."""
        return self.max_message_bytes + int(self.max_value_bytes * SERPENT_GROWTH) + ENVELOPE_BYTES

    @property
    def ns_address(self) -> str:
        """The name server as ``HOST:PORT``."""
        return f"{self.ns_host}:{self.ns_port}"

    @property
    def authenticated(self) -> bool:
        """True when this process proves a credential (the secret or a token)."""
        return self.secret is not None or self.token is not None

    @property
    def tls(self) -> bool:
        """True when mutual TLS is configured."""
        return bool(self.tls_cert or self.tls_key or self.tls_ca)

    def with_ns(self, address: str) -> Settings:
        """A copy pointing at another name server."""
        host, port = parse_address(address)
        return replace(self, ns_host=host, ns_port=port)

    @classmethod
    def from_sources(
        cls,
        ns: str | None = None,
        secret: str | bytes | None = None,
        secret_file: str | os.PathLike[str] | None = None,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_ca: str | None = None,
        serializer: str | None = None,
        debug: bool | None = None,
        max_value_bytes: int | None = None,
    ) -> Settings:
        """Build settings from explicit values, falling back to ``PYROCLUSTER_*`` variables."""
        env = os.environ
        host, port = parse_address(ns or env.get("PYROCLUSTER_NS") or f"{DEFAULT_NS_HOST}:{DEFAULT_NS_PORT}")
        for name, given in (("secret", secret), ("token", token)):
            if given is not None and not isinstance(given, (str, bytes)):
                raise TypeError(f"{name} must be a string or bytes, got {type(given).__name__}")
        secret = _given_or_read(secret, secret_file, "secret", "PYROCLUSTER_SECRET")
        if isinstance(secret, str):
            secret = secret.encode()
        if secret is not None:
            secret = secret.strip() or None  # open(f).read() keeps the newline a secret file ends with
        given_token = _given_or_read(token, token_file, "token", "PYROCLUSTER_TOKEN")
        token = given_token.decode() if isinstance(given_token, bytes) else given_token
        serializer = serializer or env.get("PYROCLUSTER_SERIALIZER") or "msgpack"
        if serializer not in SAFE_SERIALIZERS:
            raise ValueError(f"serializer {serializer!r} is not allowed (use msgpack or serpent)")
        if debug is None:
            debug = env.get("PYROCLUSTER_DEBUG", "") not in ("", "0", "false", "no")
        spin_us = _whole_number(env, "PYROCLUSTER_REPLY_SPIN_US", 0, MAX_REPLY_SPIN_US, " of microseconds")
        max_mb = _whole_number(env, "PYROCLUSTER_MAX_MESSAGE_MB", 1, 4096)
        return cls(
            ns_host=host,
            ns_port=port,
            secret=secret,
            token=token.strip() if token else None,
            tls_cert=tls_cert or env.get("PYROCLUSTER_TLS_CERT") or None,
            tls_key=tls_key or env.get("PYROCLUSTER_TLS_KEY") or None,
            tls_ca=tls_ca or env.get("PYROCLUSTER_TLS_CA") or None,
            serializer=serializer,
            debug=debug,
            max_message_bytes=max_mb * 1024 * 1024 if max_mb is not None else DEFAULT_MAX_MESSAGE_BYTES,
            max_value_bytes=_value_cap(max_value_bytes, env.get("PYROCLUSTER_MAX_VALUE_BYTES")),
            direct=env.get("PYROCLUSTER_DIRECT", "1").lower() not in ("0", "false", "no", "off"),
            reply_spin_s=spin_us / 1e6 if spin_us is not None else DEFAULT_REPLY_SPIN_S,
        )

    def child_env(self) -> dict[str, str]:
        """Environment that gives processes we start (``--local``) the same security settings."""
        env = {"PYROCLUSTER_SERIALIZER": self.serializer}
        if self.secret:
            env["PYROCLUSTER_SECRET"] = self.secret.decode()
        elif self.token:
            env["PYROCLUSTER_TOKEN"] = self.token
        for name, value in (("CERT", self.tls_cert), ("KEY", self.tls_key), ("CA", self.tls_ca)):
            if value:
                env[f"PYROCLUSTER_TLS_{name}"] = str(Path(value).resolve())
        env["PYROCLUSTER_MAX_MESSAGE_MB"] = str(max(1, self.max_message_bytes // (1024 * 1024)))
        env["PYROCLUSTER_MAX_VALUE_BYTES"] = str(self.max_value_bytes)
        if not self.direct:
            env["PYROCLUSTER_DIRECT"] = "0"
        return env


def _whole_number(env: Mapping[str, str], name: str, low: int, high: int, of: str = "") -> int | None:
    """The whole number in environment variable ``name`` (None when unset); ValueError naming it
    when it is not one from ``low`` to ``high``."""
    text = env.get(name)
    if text is None:
        return None
    if not (text.isdigit() and low <= int(text) <= high):
        raise ValueError(f"{name}={text!r}: expected a whole number{of} from {low} to {high}")
    return int(text)


def check_value_cap(size: int, what: str = "max_value_bytes") -> int:
    """``size`` if it is a valid ``max_value_bytes``; ValueError naming ``what`` otherwise."""
    low, high = MIN_VALUE_LIMIT_BYTES, MAX_VALUE_LIMIT_BYTES
    if isinstance(size, bool) or not isinstance(size, int) or not low <= size <= high:
        raise ValueError(f"{what}={size!r}: expected a whole number of bytes from {low} to {high}")
    return size


SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
"""Units a size may carry: ``300MiB``, ``1GiB``, ``8000000``."""


def parse_size(text: str, what: str) -> int:
    """Bytes from ``text`` (a whole number, optionally with a unit); ValueError naming ``what``."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in SIZE_UNITS:
        raise ValueError(f"{what}={text!r}: expected a size in bytes such as 8388608, 300MiB or 1GiB")
    return int(match.group(1)) * SIZE_UNITS[unit]


def _value_cap(explicit: int | None, variable: str | None) -> int:
    if explicit is not None:
        return check_value_cap(explicit)
    if variable is None:
        return DEFAULT_MAX_VALUE_BYTES
    what = "PYROCLUSTER_MAX_VALUE_BYTES"
    return check_value_cap(parse_size(variable, what), what)


_APPLYING = threading.Lock()
"""Held while Pyro5's configuration is written: ``submit --local`` starts its name server in a
thread while the main thread applies the same settings."""


def apply(settings: Settings) -> None:
    """Write ``settings`` into Pyro5's global configuration, ignoring ``PYRO_*`` variables.

    First checks that the installed Pyro5 still has every hook we override (``pyro5_hooks``):
    a process never starts unguarded. Pyro5 is imported here, not with this module: a command
    reads its settings (and a worker starts its fork server) before it loads Pyro5.
    """
    import Pyro5

    from pyrocluster import pyro5_hooks

    with _APPLYING:
        pyro5_hooks.ensure()
        cfg = Pyro5.config
        cfg.reset(use_environment=False)
        cfg.SERIALIZER = settings.serializer
        cfg.SERVERTYPE = "thread"
        cfg.THREADPOOL_SIZE = 512
        cfg.THREADPOOL_SIZE_MIN = 8
        cfg.SOCK_NODELAY = True
        # How often a Pyro5 server's accept loop and housekeeper wake (streams, which we do not use):
        # a shutdown wakes the accept loop itself, so idle servers need not poll. 0.5 s cost every
        # idle worker 4 wake-ups a second, 512 a second on 128 workers (docs/scaling.md).
        cfg.POLLTIMEOUT = 5.0
        cfg.COMMTIMEOUT = 0.0
        cfg.MAX_RETRIES = 0
        cfg.DETAILED_TRACEBACK = False
        cfg.MAX_MESSAGE_SIZE = settings.wire_cap_bytes
        cfg.NS_HOST = settings.ns_host
        cfg.NS_PORT = settings.ns_port
        cfg.SSL = settings.tls
        if settings.tls:
            cfg.SSL_SERVERCERT = settings.tls_cert or ""
            cfg.SSL_SERVERKEY = settings.tls_key or ""
            cfg.SSL_CLIENTCERT = settings.tls_cert or ""
            cfg.SSL_CLIENTKEY = settings.tls_key or ""
            cfg.SSL_CACERTS = settings.tls_ca or ""
            cfg.SSL_REQUIRECLIENTCERT = True
        _drop_unsafe_serializers()


def _drop_unsafe_serializers() -> None:
    """Remove marshal and json from Pyro5's tables so no daemon of ours decodes them."""
    import Pyro5.serializers

    for name in list(Pyro5.serializers.serializers):
        if name not in SAFE_SERIALIZERS:
            del Pyro5.serializers.serializers[name]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_address_towards(host: str) -> str:
    """The local IP address that packets to ``host`` leave from."""
    if is_loopback(host):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))  # UDP connect sends nothing; it only picks the route
        return str(probe.getsockname()[0])


def loopback_if_wildcard(host: str) -> str:
    """Where this machine reaches a server bound to ``host`` (a wildcard is reached over loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def check_bind(host: str, settings: Settings, insecure: bool) -> None:
    """Refuse a non-loopback bind without a cluster secret unless ``insecure``; ValueError says why."""
    if not is_loopback(host) and settings.secret is None and settings.token is None and not insecure:
        raise ValueError(
            f"refusing to listen on {host} without a cluster secret: anyone who can reach it could "
            "run tasks; set --secret-file or PYROCLUSTER_SECRET, or pass --insecure"
        )
