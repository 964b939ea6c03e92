"""The cluster-secret handshake, the serializer guard and TLS, against real daemons on 127.0.0.1."""

from __future__ import annotations

import copy
import datetime
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import Pyro5.api
import Pyro5.errors
import Pyro5.protocol
import Pyro5.serializers
import Pyro5.server
import Pyro5.socketutil
import Pyro5.svr_threads
import pytest

from pyrocluster import auth, config, pyro5_hooks, tls
from pyrocluster.config import Settings
from pyrocluster.errors import AuthenticationError, ConfigError

SECRET = b"correct horse battery staple"
WITH_SECRET = Settings(secret=SECRET)
NO_SECRET = Settings()
TIMEOUT_S = 5.0


@Pyro5.api.expose
class Echo:
    """A tiny remote object that counts the calls reaching it."""

    def __init__(self) -> None:
        self.calls = 0

    def echo(self, value: Any) -> Any:
        self.calls += 1
        return value

    def drop(self) -> None:
        """Close this client's connection from the server side."""
        Pyro5.api.current_context.client.close()


class RecordingDaemon(auth.SecureDaemon):
    """Keeps every client handshake it receives, as a sniffer on the wire would."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.seen: list[Any] = []
        super().__init__(*args, **kwargs)

    def validateHandshake(self, conn: Any, data: Any) -> Any:  # noqa: N802
        self.seen.append(copy.deepcopy(data))
        return super().validateHandshake(conn, data)


class ImpostorDaemon(auth.SecureDaemon):
    """Accepts everyone and answers with a proof made with another secret."""

    def validateHandshake(self, conn: Any, data: Any) -> Any:  # noqa: N802
        return auth.server_reply(b"not the cluster secret", data["nonce"])


@pytest.fixture
def serve() -> Iterator[Callable[..., Any]]:
    """Factory: ``serve(settings, cls=SecureDaemon)`` runs a daemon holding an ``Echo`` in a thread."""
    running: list[tuple[Any, threading.Thread]] = []

    def start(settings: Settings, cls: type = auth.SecureDaemon, **kwargs: Any) -> Any:
        config.apply(settings)
        daemon = cls(settings, "127.0.0.1", 0, **kwargs)
        daemon.echo = Echo()
        daemon.echo_uri = daemon.register(daemon.echo)
        thread = threading.Thread(target=daemon.requestLoop, name=f"daemon-{daemon.locationStr}")
        thread.start()
        running.append((daemon, thread))
        return daemon

    yield start
    for daemon, thread in running:
        daemon.shutdown()
        thread.join(TIMEOUT_S)


def raw_proxy(uri: Any, handshake: Any = "hello") -> Pyro5.api.Proxy:
    """A plain Pyro5 proxy (no pyrocluster handshake unless one is given)."""
    proxy = Pyro5.api.Proxy(uri)
    proxy._pyroHandshake = handshake
    proxy._pyroTimeout = TIMEOUT_S
    return proxy


def call_echo(uri: Any, settings: Settings, value: Any = 42) -> Any:
    with auth.make_proxy(uri, settings, timeout_s=TIMEOUT_S) as proxy:
        return proxy.echo(value)


# --- handshake logic, no sockets -----------------------------------------------------------------


def test_client_hello_round_trip_and_tampering() -> None:
    hello = auth.client_hello(SECRET, "obj_1", now=1000.0)
    auth.check_client_hello(SECRET, hello, now=1000.0)
    assert SECRET.decode() not in repr(hello)
    with pytest.raises(auth.HandshakeRefused, match="wrong cluster secret"):
        auth.check_client_hello(b"other", hello, now=1000.0)
    for key, value in (("ts", hello["ts"] + 1), ("obj", "obj_2"), ("nonce", "0" * 32)):
        with pytest.raises(auth.HandshakeRefused, match="wrong cluster secret"):
            auth.check_client_hello(SECRET, {**hello, key: value}, now=1000.0)


@pytest.mark.parametrize(
    ("hello", "reason"),
    [
        ("hello", "sent no proof"),
        (None, "sent no proof"),
        ({"v": 2, "mac": "x"}, "unsupported handshake version"),
        ({"v": 1, "mac": "x", "nonce": "0" * 32, "ts": 1000, "obj": "o"}, "malformed"),
        ({"v": 1, "mac": "0" * 64, "nonce": "zz", "ts": 1000, "obj": "o"}, "malformed"),
        ({"v": 1, "mac": "0" * 64, "nonce": "0" * 32, "ts": "1000", "obj": "o"}, "malformed"),
        ({"v": 1, "mac": "0" * 64, "nonce": "0" * 32, "ts": True, "obj": "o"}, "malformed"),
        ({"v": 1, "mac": "0" * 64, "nonce": "0" * 32, "ts": 1000, "obj": None}, "malformed"),
        ({"v": 1, "mac": "0" * 64, "nonce": "0" * 32, "ts": 10**400, "obj": "o"}, "off the server clock"),
    ],
)
def test_malformed_client_hello_is_refused(hello: Any, reason: str) -> None:
    with pytest.raises(auth.HandshakeRefused, match=reason):
        auth.check_client_hello(SECRET, hello, now=1000.0)


def test_client_hello_outside_the_window_is_refused() -> None:
    hello = auth.client_hello(SECRET, "obj_1", now=1000.0)
    auth.check_client_hello(SECRET, hello, now=1060.0, window_s=60.0)
    auth.check_client_hello(SECRET, hello, now=940.0, window_s=60.0)
    with pytest.raises(auth.HandshakeRefused, match=r"\+61 s off the server clock"):
        auth.check_client_hello(SECRET, hello, now=1061.0, window_s=60.0)
    with pytest.raises(auth.HandshakeRefused, match="-61 s off"):
        auth.check_client_hello(SECRET, hello, now=939.0, window_s=60.0)


def test_server_reply_is_bound_to_secret_and_client_nonce() -> None:
    reply = auth.server_reply(SECRET, "a" * 32)
    assert auth.check_server_reply(SECRET, "a" * 32, reply)
    assert not auth.check_server_reply(b"other", "a" * 32, reply)
    assert not auth.check_server_reply(SECRET, "b" * 32, reply)
    assert not auth.check_server_reply(SECRET, "a" * 32, "hello")
    assert not auth.check_server_reply(SECRET, "a" * 32, {**reply, "mac": "g" * 64})
    # a client's own proof reflected back is not a server proof
    hello = auth.client_hello(SECRET, "o", now=1000.0)
    assert not auth.check_server_reply(
        SECRET, hello["nonce"], {"v": 1, "nonce": "0" * 32, "mac": hello["mac"]}
    )


def test_replay_guard_refuses_a_nonce_twice_and_forgets_after_the_window() -> None:
    guard = auth.ReplayGuard(window_s=60.0, max_entries=3)
    guard.remember("a", ts=1000, now=1000.0)
    with pytest.raises(auth.HandshakeRefused, match="replayed"):
        guard.remember("a", ts=1000, now=1059.0)
    guard.remember("b", ts=1010, now=1010.0)
    guard.remember("c", ts=1020, now=1020.0)
    with pytest.raises(auth.HandshakeRefused, match="too many handshakes"):
        guard.remember("d", ts=1030, now=1030.0)
    guard.remember("d", ts=1061, now=1061.0)  # "a" has left the window: room again
    assert len(guard) == 3


def test_replay_guard_keeps_a_nonce_while_the_rounded_time_check_still_passes() -> None:
    hello = auth.client_hello(SECRET, "o", now=1000.7)
    guard = auth.ReplayGuard(window_s=60.0)
    guard.remember(hello["nonce"], hello["ts"], now=1000.7)
    auth.check_client_hello(SECRET, hello, now=1060.5)  # whole seconds: 60 s off, still timely
    with pytest.raises(auth.HandshakeRefused, match="replayed"):
        guard.remember(hello["nonce"], hello["ts"], now=1060.5)
    with pytest.raises(auth.HandshakeRefused, match="timestamp"):
        auth.check_client_hello(SECRET, hello, now=auth.refused_from(hello["ts"]))


def test_replay_guard_is_thread_safe() -> None:
    guard = auth.ReplayGuard()
    accepted: list[str] = []
    barrier = threading.Barrier(16)

    def attempt() -> None:
        barrier.wait()
        try:
            guard.remember("same", ts=1000, now=1000.0)
            accepted.append("same")
        except auth.HandshakeRefused:
            pass

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert accepted == ["same"]


# --- with a secret -------------------------------------------------------------------------------


def test_right_secret_connects_and_calls(serve: Callable[..., Any]) -> None:
    daemon = serve(WITH_SECRET)
    assert call_echo(daemon.echo_uri, WITH_SECRET) == 42
    assert daemon.echo.calls == 1


def test_serpent_client_connects_too(serve: Callable[..., Any]) -> None:
    daemon = serve(WITH_SECRET)
    assert call_echo(daemon.echo_uri, Settings(secret=SECRET, serializer="serpent"), (1, 2)) == (1, 2)


def test_plain_pyro5_proxy_is_refused(serve: Callable[..., Any]) -> None:
    daemon = serve(WITH_SECRET)
    with raw_proxy(daemon.echo_uri) as proxy, pytest.raises(Pyro5.errors.CommunicationError) as caught:
        proxy.echo(1)
    assert "pyrocluster authentication refused: this server requires the cluster secret" in str(caught.value)
    assert daemon.echo.calls == 0


@pytest.mark.parametrize("client", [NO_SECRET, Settings(secret=b"wrong")], ids=["no-secret", "wrong-secret"])
def test_client_without_the_right_secret_gets_authentication_error(
    serve: Callable[..., Any], client: Settings
) -> None:
    daemon = serve(WITH_SECRET)
    with pytest.raises(AuthenticationError, match=f"{daemon.locationStr} refused the connection: ") as caught:
        call_echo(daemon.echo_uri, client)
    reason = "wrong cluster secret" if client.secret else "requires the cluster secret"
    assert isinstance(caught.value, Pyro5.errors.SecurityError)
    assert not isinstance(caught.value, Pyro5.errors.CommunicationError)  # not to be retried
    assert reason in str(caught.value)
    assert daemon.echo.calls == 0


def test_captured_handshake_replayed_is_refused(serve: Callable[..., Any]) -> None:
    daemon = serve(WITH_SECRET, cls=RecordingDaemon)
    assert call_echo(daemon.echo_uri, WITH_SECRET) == 42
    captured = daemon.seen[-1]
    assert SECRET.decode() not in repr(captured)
    with (
        raw_proxy(daemon.echo_uri, captured) as proxy,
        pytest.raises(Pyro5.errors.CommunicationError) as caught,
    ):
        proxy.echo(1)
    assert "handshake replayed" in str(caught.value)
    assert daemon.echo.calls == 1


@pytest.mark.parametrize("later_s", [30.0, 60.5, 60.99])
def test_captured_handshake_replayed_within_the_window_is_refused(
    serve: Callable[..., Any], later_s: float
) -> None:
    daemon = serve(WITH_SECRET, cls=RecordingDaemon)
    assert call_echo(daemon.echo_uri, WITH_SECRET) == 42
    captured = daemon.seen[-1]
    daemon.pyrocluster_clock = lambda: captured["ts"] + later_s
    with (
        raw_proxy(daemon.echo_uri, captured) as proxy,
        pytest.raises(Pyro5.errors.CommunicationError, match="handshake replayed"),
    ):
        proxy.echo(1)
    assert daemon.echo.calls == 1


def test_captured_handshake_is_useless_on_another_daemon(serve: Callable[..., Any]) -> None:
    first = serve(WITH_SECRET, cls=RecordingDaemon)
    second = serve(WITH_SECRET)
    call_echo(first.echo_uri, WITH_SECRET)
    with raw_proxy(second.echo_uri, first.seen[-1]) as proxy, pytest.raises(Pyro5.errors.CommunicationError):
        proxy.echo(1)
    assert second.echo.calls == 0


def test_reconnect_after_the_server_closed_the_connection(serve: Callable[..., Any]) -> None:
    daemon = serve(WITH_SECRET, cls=RecordingDaemon)
    with auth.make_proxy(daemon.echo_uri, WITH_SECRET, timeout_s=TIMEOUT_S) as proxy:
        assert proxy.echo(1) == 1
        with pytest.raises(Pyro5.errors.ConnectionClosedError):
            proxy.drop()
        assert proxy.echo(2) == 2  # Pyro5 reconnects, with a fresh handshake
        proxy._pyroReconnect(tries=1)
        assert proxy.echo(3) == 3
    nonces = [hello["nonce"] for hello in daemon.seen]
    assert len(nonces) == 3
    assert len(set(nonces)) == 3


def test_client_refuses_a_server_without_the_secret(serve: Callable[..., Any]) -> None:
    daemon = serve(NO_SECRET)
    config.apply(WITH_SECRET)
    with auth.make_proxy(daemon.echo_uri, WITH_SECRET, timeout_s=TIMEOUT_S) as proxy:
        with pytest.raises(AuthenticationError, match="did not prove it knows the cluster secret"):
            proxy.echo(1)
        assert proxy._pyroConnection is None  # the refused connection is not kept
        with pytest.raises(AuthenticationError):
            proxy.echo(1)  # nor silently reused on the next call
    assert daemon.echo.calls == 0


def test_client_refuses_a_server_with_another_secret(serve: Callable[..., Any]) -> None:
    impostor = serve(WITH_SECRET, cls=ImpostorDaemon)
    with pytest.raises(AuthenticationError, match="did not prove it knows the cluster secret"):
        call_echo(impostor.echo_uri, WITH_SECRET)
    assert impostor.echo.calls == 0
    other = serve(Settings(secret=b"another secret"))
    with pytest.raises(AuthenticationError, match="wrong cluster secret"):
        call_echo(other.echo_uri, WITH_SECRET)


def test_many_threads_connect_at_once(serve: Callable[..., Any]) -> None:
    daemon = serve(WITH_SECRET)
    results: list[Any] = []

    def work(n: int) -> None:
        results.append(call_echo(daemon.echo_uri, WITH_SECRET, n))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert sorted(results) == list(range(20))


def test_make_proxy_returns_fresh_proxies_and_copies_keep_the_secret(serve: Callable[..., Any]) -> None:
    daemon = serve(WITH_SECRET)
    first = auth.make_proxy(daemon.echo_uri, WITH_SECRET, timeout_s=TIMEOUT_S)
    second = auth.make_proxy(daemon.echo_uri, WITH_SECRET, timeout_s=TIMEOUT_S)
    copied = copy.copy(first)
    with first, second, copied:
        assert first is not second
        assert first._pyroSerializer == "msgpack"
        assert first._pyroTimeout == TIMEOUT_S
        assert [first.echo(1), second.echo(2), copied.echo(3)] == [1, 2, 3]


def test_make_proxy_wants_a_pyro_uri() -> None:
    config.apply(WITH_SECRET)
    with pytest.raises(ValueError, match="PYRO: URI"):
        auth.make_proxy("PYRONAME:some.name@127.0.0.1:1", WITH_SECRET)
    with pytest.raises(ConfigError, match="secret is empty"):
        auth.make_proxy("PYRO:obj@127.0.0.1:1", Settings(secret=b""))
    with pytest.raises(ConfigError, match="json"):
        auth.make_proxy("PYRO:obj@127.0.0.1:1", Settings(serializer="json"))


# --- the name server -----------------------------------------------------------------------------


def ns_uri(daemon: Any) -> str:
    return f"PYRO:Pyro.NameServer@{daemon.locationStr}"


def test_name_server_with_a_secret(serve: Callable[..., Any]) -> None:
    ns = serve(WITH_SECRET, cls=auth.SecureNameServerDaemon, storage="memory")
    with auth.make_proxy(ns_uri(ns), WITH_SECRET, timeout_s=TIMEOUT_S) as proxy:
        proxy.register("test.echo", ns.echo_uri, metadata={"service:echo"})
        assert proxy.lookup("test.echo") == ns.echo_uri
        assert proxy.yplookup(meta_all=["service:echo"], return_metadata=False) == {
            "test.echo": str(ns.echo_uri)
        }
    with raw_proxy(ns_uri(ns)) as proxy, pytest.raises(Pyro5.errors.CommunicationError, match="refused"):
        proxy.list()
    wrong = auth.make_proxy(ns_uri(ns), Settings(secret=b"wrong"), timeout_s=TIMEOUT_S)
    with wrong, pytest.raises(AuthenticationError, match="wrong cluster secret"):
        wrong.list()


def test_name_server_refuses_a_replayed_handshake(serve: Callable[..., Any]) -> None:
    class RecordingNameServer(auth.SecureNameServerDaemon):
        seen: list[Any] = []

        def validateHandshake(self, conn: Any, data: Any) -> Any:  # noqa: N802
            self.seen.append(copy.deepcopy(data))
            return super().validateHandshake(conn, data)

    ns = serve(WITH_SECRET, cls=RecordingNameServer, storage="memory")
    with auth.make_proxy(ns_uri(ns), WITH_SECRET, timeout_s=TIMEOUT_S) as proxy:
        assert "Pyro.NameServer" in proxy.list()
    with (
        raw_proxy(ns_uri(ns), ns.seen[-1]) as proxy,
        pytest.raises(Pyro5.errors.CommunicationError) as caught,
    ):
        proxy.list()
    assert "handshake replayed" in str(caught.value)


def test_name_server_without_a_secret_accepts_everyone(serve: Callable[..., Any]) -> None:
    ns = serve(NO_SECRET, cls=auth.SecureNameServerDaemon, storage="memory")
    with raw_proxy(ns_uri(ns)) as proxy:
        proxy._pyroSerializer = "msgpack"
        proxy.register("test.echo", ns.echo_uri)
    with auth.make_proxy(ns_uri(ns), NO_SECRET, timeout_s=TIMEOUT_S) as proxy:
        assert proxy.lookup("test.echo") == ns.echo_uri


# --- without a secret ----------------------------------------------------------------------------


def test_without_a_secret_everyone_connects(serve: Callable[..., Any]) -> None:
    daemon = serve(NO_SECRET)
    with raw_proxy(daemon.echo_uri) as proxy:
        assert proxy.echo(1) == 1
    assert call_echo(daemon.echo_uri, NO_SECRET) == 42
    assert daemon.echo.calls == 2


# --- unsafe serializers --------------------------------------------------------------------------


def raw_connection(daemon: Any) -> Pyro5.socketutil.SocketConnection:
    sock = socket.create_connection(daemon.sock.getsockname()[:2], timeout=TIMEOUT_S)
    return Pyro5.socketutil.SocketConnection(sock)


def unsafe_serializer(name: str) -> Any:
    return {"marshal": Pyro5.serializers.MarshalSerializer, "json": Pyro5.serializers.JsonSerializer}[name]()


def send_handshake(conn: Any, serializer: Any, daemon: Any) -> Any:
    hello = auth.client_hello(SECRET, daemon.echo_uri.object, auth.time.time())
    payload = serializer.dumps({"handshake": hello, "object": daemon.echo_uri.object})
    conn.send(
        Pyro5.protocol.SendingMessage(
            Pyro5.protocol.MSG_CONNECT, 0, 0, serializer.serializer_id, payload
        ).data
    )
    return Pyro5.protocol.recv_stub(conn, [Pyro5.protocol.MSG_CONNECTOK, Pyro5.protocol.MSG_CONNECTFAIL])


@pytest.mark.parametrize("name", ["marshal", "json"])
def test_handshake_in_an_unsafe_serializer_is_refused(serve: Callable[..., Any], name: str) -> None:
    daemon = serve(WITH_SECRET)
    serializer = unsafe_serializer(name)
    with raw_connection(daemon) as conn:
        reply = send_handshake(conn, serializer, daemon)  # a correct proof, in the wrong serializer
        assert reply.type == Pyro5.protocol.MSG_CONNECTFAIL
        assert (
            serializer.loads(reply.data)
            == f"pyrocluster refuses the {name} serializer; use msgpack or serpent"
        )
    assert call_echo(daemon.echo_uri, WITH_SECRET) == 42  # and it goes on serving others


@pytest.mark.parametrize("name", ["marshal", "json"])
def test_request_in_an_unsafe_serializer_is_refused(serve: Callable[..., Any], name: str) -> None:
    daemon = serve(WITH_SECRET)
    msgpack = Pyro5.serializers.MsgpackSerializer()
    serializer = unsafe_serializer(name)
    with raw_connection(daemon) as conn:
        assert send_handshake(conn, msgpack, daemon).type == Pyro5.protocol.MSG_CONNECTOK
        payload = serializer.dumpsCall(daemon.echo_uri.object, "echo", [1], {})
        conn.send(
            Pyro5.protocol.SendingMessage(
                Pyro5.protocol.MSG_INVOKE, 0, 1, serializer.serializer_id, payload
            ).data
        )
        reply = Pyro5.protocol.recv_stub(conn, [Pyro5.protocol.MSG_RESULT])
        assert reply.flags & Pyro5.protocol.FLAGS_EXCEPTION
        error = serializer.loads(reply.data)
        assert isinstance(error, Pyro5.errors.SecurityError)
        assert str(error) == f"pyrocluster refuses the {name} serializer; use msgpack or serpent"
        with pytest.raises(Pyro5.errors.ConnectionClosedError):
            conn.recv(1)  # the daemon hung up on that client
    assert daemon.echo.calls == 0
    assert call_echo(daemon.echo_uri, WITH_SECRET) == 42


def test_client_refuses_a_reply_in_an_unsafe_serializer() -> None:
    config.apply(WITH_SECRET)
    auth.refuse_unsafe_serializers()
    marshal = Pyro5.serializers.serializers_by_id[Pyro5.serializers.MarshalSerializer.serializer_id]
    with pytest.raises(Pyro5.errors.SecurityError, match="refuses the marshal serializer"):
        marshal.loads(Pyro5.serializers.MarshalSerializer().dumps("anything"))


# --- TLS -----------------------------------------------------------------------------------------


def _make_pki(directory: Path, name: str) -> tuple[str, str, str]:
    """A CA and one certificate it signed (no host names in it), as PEM files: (cert, key, ca)."""
    crypto = pytest.importorskip("cryptography")
    del crypto
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject: str, issuer: str, key: Any, signer: Any, ca: bool) -> Any:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=not ca,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=ca,
                    crl_sign=ca,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
            )
            .sign(signer, hashes.SHA256())
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build(f"{name} CA", f"{name} CA", ca_key, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build(f"{name} member", f"{name} CA", key, ca_key, ca=False)
    paths = [directory / f"{name}-{part}.pem" for part in ("cert", "key", "ca")]
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    paths[2].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return str(paths[0]), str(paths[1]), str(paths[2])


def test_mutual_tls_with_the_secret(serve: Callable[..., Any], tmp_path: Path) -> None:
    cert, key, ca = _make_pki(tmp_path, "cluster")
    tls = Settings(secret=SECRET, tls_cert=cert, tls_key=key, tls_ca=ca)
    daemon = serve(tls)
    # one client that connects and says nothing must not stop the daemon accepting others
    with socket.create_connection(daemon.sock.getsockname()[:2], timeout=TIMEOUT_S):
        assert call_echo(daemon.echo_uri, tls) == 42
        with auth.make_proxy(daemon.echo_uri, tls, timeout_s=TIMEOUT_S) as proxy:
            proxy._pyroBind()
            assert proxy._pyroConnection.getpeercert()["subject"] == ((("commonName", "cluster member"),),)

    # a certificate from another CA is refused, even with the right secret
    other_cert, other_key, other_ca = _make_pki(tmp_path, "other")
    stranger = Settings(secret=SECRET, tls_cert=other_cert, tls_key=other_key, tls_ca=ca)
    config.apply(stranger)
    with pytest.raises(Pyro5.errors.CommunicationError):
        call_echo(daemon.echo_uri, stranger)
    assert daemon.echo.calls == 1


def test_tls_settings_must_be_applied_and_complete(tmp_path: Path) -> None:
    cert, key, ca = _make_pki(tmp_path, "cluster")
    config.apply(NO_SECRET)
    with pytest.raises(ConfigError, match="config.apply"):
        auth.make_proxy("PYRO:obj@127.0.0.1:1", Settings(tls_cert=cert, tls_key=key, tls_ca=ca))
    with pytest.raises(ConfigError, match="--tls-ca"):
        tls.tls_contexts(Settings(tls_cert=cert, tls_key=key))
    with pytest.raises(ConfigError, match=r"--tls-key .*missing\.pem: No such file"):
        tls.tls_contexts(Settings(tls_cert=cert, tls_key=str(tmp_path / "missing.pem"), tls_ca=ca))


# --- the Pyro5 hooks we override -------------------------------------------------------------------

PYRO5_HOOKS = [
    (Pyro5.server.Daemon, "_handshake", "Daemon._handshake"),
    (Pyro5.server.Daemon, "_housekeeping", "Daemon._housekeeping"),
    (Pyro5.server.Daemon, "validateHandshake", "Daemon._handshake"),
    (Pyro5.api.Proxy, "_Proxy__pyroCreateConnection", "Proxy.__pyroCreateConnection"),
    (Pyro5.api.Proxy, "_pyroValidateHandshake", "Proxy.__pyroCreateConnection"),
    (Pyro5.protocol.ReceivingMessage, "add_payload", "ReceivingMessage.add_payload"),
    (Pyro5.protocol, "FLAGS_COMPRESSED", "ReceivingMessage.add_payload"),
    (Pyro5.socketutil, "__ssl_client_context", "socketutil.__ssl_*_context"),
    (Pyro5.serializers, "serializers_by_id", "serializers.serializers_by_id"),
]


def test_every_pyro5_hook_is_in_place_in_the_installed_pyro5() -> None:
    auth.prepare_transport(NO_SECRET)  # with our guards installed, too
    assert pyro5_hooks.problems() == []
    pyro5_hooks.check()


@pytest.mark.parametrize(("owner", "attr", "hook"), PYRO5_HOOKS, ids=[h[1] for h in PYRO5_HOOKS])
def test_the_self_check_fails_loudly_when_a_pyro5_hook_is_gone(
    monkeypatch: pytest.MonkeyPatch, owner: Any, attr: str, hook: str
) -> None:
    monkeypatch.delattr(owner, attr)
    monkeypatch.setattr(pyro5_hooks, "_checked", False)
    with pytest.raises(pyro5_hooks.Pyro5Incompatible, match=re.escape(hook)) as caught:
        config.apply(NO_SECRET)
    assert isinstance(caught.value, ConfigError)  # exit code 2 with one error: line
    with pytest.raises(pyro5_hooks.Pyro5Incompatible):
        auth.prepare_transport(NO_SECRET)


def test_the_self_check_fails_when_pyro5_stops_calling_a_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    # the method still exists, but the thread server no longer calls it: our override would be dead
    def handle_connection(self: Any) -> bool:
        return True

    monkeypatch.setattr(Pyro5.svr_threads.ClientConnectionJob, "handleConnection", handle_connection)
    monkeypatch.setattr(Pyro5.svr_threads.ClientConnectionJob, "denyConnection", handle_connection)
    with pytest.raises(pyro5_hooks.Pyro5Incompatible, match="no longer call"):
        pyro5_hooks.check()


def test_a_worker_with_an_incompatible_pyro5_exits_with_one_error_line(tmp_path: Path) -> None:
    script = (
        "import sys, Pyro5.server\n"
        "del Pyro5.server.Daemon._housekeeping\n"
        "from pyrocluster.cli import main\n"
        "sys.argv = ['pyrocluster', 'nameserver', '--port', '0']\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Daemon._housekeeping" in lines[0], lines
    assert "ready" not in done.stdout
