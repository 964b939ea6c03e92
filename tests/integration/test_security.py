"""Cluster secret, mutual TLS and wire-level attacks against real name-server and worker processes.

Every attack here is made from outside the processes, on 127.0.0.1, the way a stranger on the
network would: plain Pyro5 proxies, raw sockets, recorded bytes replayed, certificates from
another CA. SECURITY.md lists them with their outcomes.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import Pyro5.api
import Pyro5.core
import Pyro5.errors
import Pyro5.protocol
import Pyro5.serializers
import Pyro5.socketutil
import pytest

from pyrocluster import auth, codec, config, tls
from pyrocluster.config import Settings
from pyrocluster.coordinator.cluster import Cluster
from pyrocluster.errors import AuthenticationError
from pyrocluster.local import ManagedProcess, start_nameserver, start_worker
from tests.conftest import Processes, run_cli, wait_for
from tests.helpers.certs import CertificateAuthority, Member, make_member
from tests.helpers.rawworker import decoded

SECRET = "integration-secret-3f9a"
TIMEOUT_S = 5.0
WORKER = "sec-w1"
NO_SECRET_ENV = {"PYROCLUSTER_SECRET": "", "PYROCLUSTER_SECRET_FILE": ""}
"""Makes sure a child process sees no secret, whatever the test runner's environment holds."""
LOCKOUT_LIMIT_S = 15.0
"""Longest a flood of silent connections may keep clients out (the daemon drops them after 5 s)."""
NO_TLS_ENV = {"PYROCLUSTER_TLS_CERT": "", "PYROCLUSTER_TLS_KEY": "", "PYROCLUSTER_TLS_CA": ""}


def secret_env(secret: str = SECRET) -> dict[str, str]:
    return {**NO_TLS_ENV, "PYROCLUSTER_SECRET_FILE": "", "PYROCLUSTER_SECRET": secret}


def with_secret(ns: str, secret: str | None = SECRET, **kw: Any) -> Settings:
    return Settings(secret=secret.encode() if secret else None, **kw).with_ns(ns)


def ns_uri(ns: str) -> str:
    return f"PYRO:Pyro.NameServer@{ns}"


def worker_uris(ns: str, settings: Settings, name: str = WORKER) -> dict[str, Pyro5.core.URI]:
    """service -> URI of one worker's registered objects, looked up with ``settings``."""
    with auth.make_proxy(ns_uri(ns), settings, timeout_s=TIMEOUT_S) as proxy:
        listing = proxy.list(prefix=f"pyrocluster.worker.{name}.")
    return {key.rpartition(".")[2]: Pyro5.core.URI(uri) for key, uri in listing.items()}


def worker_info(uri: Pyro5.core.URI, settings: Settings) -> dict[str, Any]:
    with auth.make_proxy(uri, settings, timeout_s=TIMEOUT_S) as proxy:
        return dict(proxy.info())


def compute_request(*calls: tuple[str, list[Any]]) -> dict[str, Any]:
    """A protocol v2 request (docs/protocol.md) for ``(task, args)`` calls."""
    return {
        "from": "security-test",
        "calls": [[str(i), name, codec.pack_call(args, {}), 10.0, 0] for i, (name, args) in enumerate(calls)],
    }


def decoded_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """A compute reply with its outcomes' values decoded."""
    outcomes = [list(decoded(o)) + o[2:] for o in reply["outcomes"]]
    return {**reply, "outcomes": outcomes}


def run_add(uri: Pyro5.core.URI, settings: Settings, a: int = 40, b: int = 2) -> Any:
    with auth.make_proxy(uri, settings, timeout_s=TIMEOUT_S) as proxy:
        return decoded_reply(proxy.run_batch(compute_request(("add", [a, b]))))


def raw_proxy(uri: Any) -> Pyro5.api.Proxy:
    """A plain Pyro5 proxy: no pyrocluster handshake at all."""
    proxy = Pyro5.api.Proxy(uri)
    proxy._pyroTimeout = TIMEOUT_S
    return proxy


def error_line(result: Any) -> str:
    """The whole stderr of a command, which must be one ``error:`` line and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result
    assert "Traceback" not in result.stderr
    return lines[0]


# --- raw wire helpers ----------------------------------------------------------------------------

MSGPACK = Pyro5.serializers.MsgpackSerializer()


def raw_connection(uri: Pyro5.core.URI) -> Pyro5.socketutil.SocketConnection:
    return Pyro5.socketutil.SocketConnection(
        socket.create_connection((uri.host, uri.port), timeout=TIMEOUT_S)
    )


def message(msgtype: int, serializer_id: int, payload: bytes, seq: int = 0, flags: int = 0) -> bytes:
    """A Pyro5 wire message, built by hand (so nothing in this process refuses to build it)."""
    import struct

    header = struct.pack(
        Pyro5.protocol._header_format,
        b"PYRO",
        Pyro5.protocol.PROTOCOL_VERSION,
        msgtype,
        serializer_id,
        flags,
        seq,
        len(payload),
        0,
        b"\0" * 16,
        0,
        Pyro5.protocol._magic_number,
    )
    return header + payload


def hello(uri: Pyro5.core.URI, secret: str | None = SECRET) -> bytes:
    """A correct connect message for ``uri`` (in msgpack), proving ``secret`` if one is given."""
    proof = auth.client_hello(secret.encode(), uri.object, time.time()) if secret else "hello"
    payload = MSGPACK.dumps({"handshake": proof, "object": uri.object})
    return message(Pyro5.protocol.MSG_CONNECT, MSGPACK.serializer_id, payload)


def connect_reply(conn: Pyro5.socketutil.SocketConnection) -> tuple[int, Any]:
    """(message type, decoded msgpack data) of the daemon's answer to a connect message."""
    reply = Pyro5.protocol.recv_stub(conn, [Pyro5.protocol.MSG_CONNECTOK, Pyro5.protocol.MSG_CONNECTFAIL])
    # Pyro5 answers in marshal when it failed before knowing the client's serializer; decoding
    # that here is safe: it comes from our own daemon
    serializer = (
        MSGPACK if reply.serializer_id == MSGPACK.serializer_id else Pyro5.serializers.MarshalSerializer()
    )
    return reply.type, serializer.loads(reply.data)


def assert_connection_closed(conn: Pyro5.socketutil.SocketConnection) -> None:
    """The daemon hung up on this client (nothing more to read)."""
    with pytest.raises((Pyro5.errors.ConnectionClosedError, ConnectionError)):
        conn.recv(1)


class RecordingRelay:
    """A TCP relay in front of a server that keeps every byte clients send through it (a sniffer)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.captured: list[bytearray] = []
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, name="relay-accept", daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:  # a timeout, or the listener closed
                continue
            upstream = socket.create_connection(self.target, timeout=TIMEOUT_S)
            record = bytearray()
            self.captured.append(record)
            self._sockets += [client, upstream]
            for src, dst, rec in ((client, upstream, record), (upstream, client, None)):
                thread = threading.Thread(target=self._pump, args=(src, dst, rec), daemon=True)
                thread.start()
                self._threads.append(thread)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
        try:
            while data := src.recv(65536):
                if record is not None:
                    record.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def uri(self, object_id: str) -> Pyro5.core.URI:
        return Pyro5.core.URI(f"PYRO:{object_id}@127.0.0.1:{self.port}")

    def close(self) -> None:
        self._stop.set()
        for sock in [self.listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in recv (close alone does not)
            sock.close()
        for thread in self._threads:
            thread.join(TIMEOUT_S)

    def __enter__(self) -> RecordingRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- fixtures ------------------------------------------------------------------------------------


class SecureCluster:
    """A name server started with ``--secret-file`` and a worker given PYROCLUSTER_SECRET."""

    def __init__(self, ns: str, secret_file: Path, worker: ManagedProcess) -> None:
        self.ns = ns
        self.secret_file = secret_file
        self.worker = worker
        self.settings = with_secret(ns)
        config.apply(self.settings)
        self.uris = worker_uris(ns, self.settings)

    def info(self) -> dict[str, Any]:
        config.apply(self.settings)
        return worker_info(self.uris["control"], self.settings)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    """One secured name server and worker for the module (attacks must leave them serving)."""
    procs = Processes()
    secret_file = tmp_path_factory.mktemp("secret") / "cluster.secret"
    secret_file.write_text(SECRET + "\n")
    os.chmod(secret_file, 0o600)
    try:
        ns_proc, ns = start_nameserver(
            ["--secret-file", str(secret_file)], env={**NO_SECRET_ENV, **NO_TLS_ENV}
        )
        procs.add(ns_proc)
        worker = procs.add(
            start_worker(
                ns, ["--name", WORKER, "--services", "compute", "--concurrency", "2"], env=secret_env()
            )
        )
        yield SecureCluster(ns, secret_file, worker)
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Member, Member]:
    """(a cluster member certificate, a certificate from another CA), generated now."""
    directory = tmp_path_factory.mktemp("pki")
    member = CertificateAuthority(directory, "cluster").issue("cluster member")
    stranger = make_member(directory, "stranger", ca_name="rogue")
    return member, stranger


def write_job(directory: Path, n: int = 20) -> Path:
    job = directory / "secure.yaml"
    items = "\n".join(f"      - [{i}, {i}]" for i in range(n))
    job.write_text(
        "name: secure\ntasks:\n  - id: answer\n    call: add\n    args: [40, 2]\n"
        f"  - id: double\n    call: add\n    map:\n{items}\n"
    )
    return job


def check_submit(result: Any, out: Path, n: int = 20) -> None:
    assert result.returncode == 0, result
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["total"], summary["ok"], summary["failed"]) == (n + 1, n + 1, 0), summary
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["answer"]["result"] == 42
    assert [records[f"double-{i}"]["result"] for i in range(n)] == [2 * i for i in range(n)]


# --- with a secret -------------------------------------------------------------------------------


def test_plain_pyro5_proxy_is_refused_by_name_server_and_worker(secure: SecureCluster) -> None:
    before = secure.info()["done"]
    config.apply(Settings())  # this process speaks msgpack and no TLS, like any Pyro5 client
    targets = [
        (ns_uri(secure.ns), "list", ()),
        (secure.uris["control"], "ping", ()),
        (secure.uris["compute"], "run_batch", ([["add", [1, 2], {}, 5.0]],)),
    ]
    for uri, method, args in targets:
        with raw_proxy(uri) as proxy, pytest.raises(Pyro5.errors.CommunicationError) as caught:
            getattr(proxy, method)(*args)
        assert "pyrocluster authentication refused: this server requires the cluster secret" in str(
            caught.value
        ), uri
    assert secure.info()["done"] == before  # nothing ran


@pytest.mark.parametrize("how", ["env", "secret-file", "none"])
def test_status_with_a_wrong_or_missing_secret_is_exit_3(
    secure: SecureCluster, tmp_path: Path, how: str
) -> None:
    if how == "env":
        result = run_cli("status", "--ns", secure.ns, env=secret_env("not the secret"))
    elif how == "secret-file":
        wrong = tmp_path / "wrong.secret"
        wrong.write_text("also not the secret\n")
        result = run_cli("status", "--ns", secure.ns, "--secret-file", str(wrong), env=NO_SECRET_ENV)
    else:
        result = run_cli("status", "--ns", secure.ns, env={**NO_SECRET_ENV, **NO_TLS_ENV})
    assert result.returncode == 3, result
    line = error_line(result)
    assert f"{secure.ns} refused the connection" in line
    assert ("requires the cluster secret" if how == "none" else "wrong cluster secret") in line
    assert result.stdout == ""


def test_worker_with_a_wrong_secret_cannot_register(secure: SecureCluster) -> None:
    for env in (secret_env("not the secret"), {**NO_SECRET_ENV, **NO_TLS_ENV}):
        result = run_cli(
            "worker", "--ns", secure.ns, "--name", "intruder", "--services", "compute", env=env, timeout=30
        )
        assert result.returncode == 3, result
        assert "refused the connection" in error_line(result)
    config.apply(secure.settings)
    assert worker_uris(secure.ns, secure.settings, "intruder") == {}


def test_right_secret_works_end_to_end(secure: SecureCluster, tmp_path: Path) -> None:
    with Cluster(secure.ns, secret=SECRET, wait=10) as cluster:
        assert list(cluster.starmap("add", [(i, 1) for i in range(200)])) == [i + 1 for i in range(200)]
        status = cluster.status()
    assert [w["name"] for w in status["workers"]] == [WORKER]
    assert status["workers"][0]["state"] == "ready"

    out = tmp_path / "results.jsonl"
    result = run_cli(
        "submit", str(write_job(tmp_path)), "--ns", secure.ns, "--secret-file", str(secure.secret_file),
        "--out", str(out), "--json", "--quiet", env=NO_SECRET_ENV, cwd=tmp_path,
    )  # fmt: skip
    check_submit(result, out)
    status_cli = run_cli("status", "--ns", secure.ns, "--json", env=secret_env())
    assert status_cli.returncode == 0, status_cli
    assert json.loads(status_cli.stdout)["workers"][0]["name"] == WORKER


def test_wrong_secret_in_the_python_api_is_an_authentication_error(secure: SecureCluster) -> None:
    settings = with_secret(secure.ns, "not the secret")
    config.apply(settings)
    with pytest.raises(AuthenticationError, match="wrong cluster secret"):
        worker_info(secure.uris["control"], settings)


@pytest.mark.parametrize("target", ["worker", "nameserver"])
def test_captured_handshake_replayed_is_refused(secure: SecureCluster, target: str) -> None:
    """Record a real client's bytes on the wire, then send them again: nothing is executed."""
    config.apply(secure.settings)
    uri = secure.uris["compute"] if target == "worker" else Pyro5.core.URI(ns_uri(secure.ns))
    done_before = secure.info()["done"]
    with RecordingRelay((uri.host, uri.port)) as relay:
        with auth.make_proxy(relay.uri(uri.object), secure.settings, timeout_s=TIMEOUT_S) as proxy:
            if target == "worker":
                reply = decoded_reply(proxy.run_batch(compute_request(("add", [40, 2]))))
                assert reply["outcomes"][0][:2] == [0, 42]
            else:
                assert "Pyro.NameServer" in proxy.list()
        wait_for(lambda: relay.captured and len(relay.captured[0]) > 0, 5)
        captured = bytes(relay.captured[0])
    assert SECRET.encode() not in captured  # the secret itself never crosses the wire
    with raw_connection(uri) as conn:
        conn.send(captured)  # the recorded handshake and the call after it, byte for byte
        kind, reason = connect_reply(conn)
        assert kind == Pyro5.protocol.MSG_CONNECTFAIL
        assert (
            reason == "pyrocluster authentication refused: handshake replayed (this nonce was already used)"
        )
        assert_connection_closed(conn)
    assert secure.info()["done"] == done_before + (1 if target == "worker" else 0)  # not twice


def test_client_refuses_a_name_server_without_the_secret(processes: Processes) -> None:
    """A rogue name server (no secret) cannot pass itself off as the cluster's."""
    proc, open_ns = start_nameserver(env={**NO_SECRET_ENV, **NO_TLS_ENV})
    processes.add(proc)
    result = run_cli("status", "--ns", open_ns, env=secret_env())
    assert result.returncode == 3, result
    assert "did not prove it knows the cluster secret" in error_line(result)
    result = run_cli("worker", "--ns", open_ns, "--services", "compute", env=secret_env(), timeout=30)
    assert result.returncode == 3, result
    assert "did not prove it knows the cluster secret" in error_line(result)


# --- unsafe serializers on a real worker ---------------------------------------------------------


def test_marshal_request_to_a_real_worker_is_refused(secure: SecureCluster) -> None:
    marshal = Pyro5.serializers.MarshalSerializer()
    uri = secure.uris["compute"]
    done_before = secure.info()["done"]
    # a correct proof of the secret, then a call serialized with marshal
    with raw_connection(uri) as conn:
        conn.send(hello(uri))
        assert connect_reply(conn)[0] == Pyro5.protocol.MSG_CONNECTOK
        call = marshal.dumpsCall(uri.object, "run_batch", ([["add", [1, 2], {}, 5.0]],), {})
        conn.send(message(Pyro5.protocol.MSG_INVOKE, marshal.serializer_id, call, seq=1))
        reply = Pyro5.protocol.recv_stub(conn, [Pyro5.protocol.MSG_RESULT])
        assert reply.flags & Pyro5.protocol.FLAGS_EXCEPTION
        error = marshal.loads(reply.data)
        assert isinstance(error, Pyro5.errors.SecurityError)
        assert str(error) == "pyrocluster refuses the marshal serializer; use msgpack or serpent"
        assert_connection_closed(conn)
    # the handshake itself in marshal
    with raw_connection(uri) as conn:
        proof = auth.client_hello(SECRET.encode(), uri.object, time.time())
        payload = marshal.dumps({"handshake": proof, "object": uri.object})
        conn.send(message(Pyro5.protocol.MSG_CONNECT, marshal.serializer_id, payload))
        reply = Pyro5.protocol.recv_stub(conn, [Pyro5.protocol.MSG_CONNECTFAIL])
        assert (
            marshal.loads(reply.data) == "pyrocluster refuses the marshal serializer; use msgpack or serpent"
        )
    config.apply(secure.settings)
    assert run_add(uri, secure.settings)["outcomes"][0][:2] == [0, 42]  # and it keeps serving
    assert secure.info()["done"] == done_before + 1


class _Exploit:
    """Unpickling this creates a marker file: proof that a pickle would have been decoded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("serializer_id", [5, 6, 99], ids=["id5", "id6", "id99"])
def test_pickle_payload_under_an_unknown_serializer_id_is_never_decoded(
    secure: SecureCluster, tmp_path: Path, serializer_id: int
) -> None:
    """Pyro4 numbered pickle/dill 4-6; Pyro5 knows none of them and we decode only msgpack/serpent."""
    uri = secure.uris["compute"]
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(marker))
    with raw_connection(uri) as conn:  # as the handshake
        conn.send(message(Pyro5.protocol.MSG_CONNECT, serializer_id, payload))
        assert_connection_closed(conn)
    with raw_connection(uri) as conn:  # as a call after a correct handshake
        conn.send(hello(uri))
        assert connect_reply(conn)[0] == Pyro5.protocol.MSG_CONNECTOK
        conn.send(message(Pyro5.protocol.MSG_INVOKE, serializer_id, payload, seq=1))
        assert_connection_closed(conn)
    assert not marker.exists()
    config.apply(secure.settings)
    assert run_add(uri, secure.settings)["outcomes"][0][:2] == [0, 42]


# --- wire-level attacks before authentication ----------------------------------------------------


def rss_mb(proc: ManagedProcess) -> float:
    import psutil

    return psutil.Process(proc.pid).memory_info().rss / 1e6


@pytest.mark.parametrize("size", ["small", "large"])
def test_compressed_connect_message_is_refused_unread(secure: SecureCluster, size: str) -> None:
    """A decompression bomb: zeros that inflate 1000-fold, sent before any authentication."""
    uri = secure.uris["control"]
    inflated = 60_000_000 if size == "small" else 400_000_000
    bomb = zlib.compress(b"\0" * inflated, 9)
    rss_before = rss_mb(secure.worker)
    with raw_connection(uri) as conn:
        conn.send(
            message(
                Pyro5.protocol.MSG_CONNECT, MSGPACK.serializer_id, bomb, flags=Pyro5.protocol.FLAGS_COMPRESSED
            )
        )
        kind, reason = connect_reply(conn)
    assert kind == Pyro5.protocol.MSG_CONNECTFAIL
    if size == "small":
        assert reason == "pyrocluster refuses compressed messages"
    else:
        assert reason == f"pyrocluster refuses a connect message over {auth.MAX_HANDSHAKE_BYTES} bytes"
    assert rss_mb(secure.worker) < rss_before + 50  # nothing was inflated
    assert secure.info()["state"] == "ready"


@pytest.mark.parametrize(
    "attack",
    ["oversized-header", "garbage", "wrong-message-type", "truncated", "half-open"],
)
def test_malformed_connect_messages_are_dropped(secure: SecureCluster, attack: str) -> None:
    uri = secure.uris["control"]
    with raw_connection(uri) as conn:
        if attack == "oversized-header":  # claims a gigabyte, sends a few bytes
            data = message(Pyro5.protocol.MSG_CONNECT, MSGPACK.serializer_id, b"x")
            data = data[:16] + (1 << 30).to_bytes(4, "big") + data[20:]
        elif attack == "garbage":
            data = os.urandom(4096)
        elif attack == "wrong-message-type":  # a call without any handshake
            call = MSGPACK.dumpsCall(uri.object, "drain", (), {})
            data = message(Pyro5.protocol.MSG_INVOKE, MSGPACK.serializer_id, call)
        elif attack == "truncated":
            data = hello(uri)[:-10]
        else:  # the header only, then nothing
            data = hello(uri)[:24]
        conn.send(data)
        if attack in ("truncated", "half-open"):
            conn.sock.shutdown(socket.SHUT_WR)
        try:
            kind, _ = connect_reply(conn)
            assert kind == Pyro5.protocol.MSG_CONNECTFAIL
        except (Pyro5.errors.ConnectionClosedError, Pyro5.errors.ProtocolError, ConnectionError):
            pass  # dropped without an answer
    assert secure.info()["state"] == "ready"  # and not drained by the handshake-less call


def test_silent_connections_do_not_lock_out_clients(secure: SecureCluster) -> None:
    """More idle connections than the daemon has threads, none ever sending a byte."""
    uri = secure.uris["control"]
    silent = [socket.create_connection((uri.host, uri.port), timeout=TIMEOUT_S) for _ in range(600)]
    try:
        started = time.monotonic()

        def served() -> bool:
            try:
                return secure.info()["state"] == "ready"
            except (Pyro5.errors.PyroError, AuthenticationError):
                return False

        wait_for(served, LOCKOUT_LIMIT_S, interval_s=0.05)
        assert time.monotonic() - started < LOCKOUT_LIMIT_S
    finally:
        for sock in silent:
            sock.close()


HOSTILE_PYRO_ENV = {
    "PYRO_MAX_MESSAGE_SIZE": "200",
    "PYRO_COMPRESSION": "true",
    "PYRO_SERIALIZER": "marshal",
    "PYRO_DETAILED_TRACEBACK": "true",
    "PYRO_COMMTIMEOUT": "0.001",
    "PYRO_SSL": "false",
}
"""Pyro5 settings a hostile or careless environment could hold; pyrocluster must not take them."""


def test_pyro_environment_variables_are_ignored(processes: Processes) -> None:
    env = {**secret_env(), **HOSTILE_PYRO_ENV}
    ns_proc, ns = start_nameserver(env=env)
    processes.add(ns_proc)
    processes.add(
        start_worker(ns, ["--name", "pyro-env", "--services", "compute", "--concurrency", "1"], env=env)
    )
    settings = with_secret(ns)
    config.apply(settings)
    uris = worker_uris(ns, settings, "pyro-env")
    big = "y" * 10_000  # over PYRO_MAX_MESSAGE_SIZE, and compressed if PYRO_COMPRESSION were taken
    with auth.make_proxy(uris["compute"], settings, timeout_s=TIMEOUT_S) as proxy:
        reply = decoded_reply(proxy.run_batch(compute_request(("echo", [big]), ("fail", ["boom"]))))
    assert reply["outcomes"][0][:2] == [0, big]
    assert reply["outcomes"][1][1]["message"] == "boom"
    result = run_cli("status", "--ns", ns, "--json", env=env)
    assert result.returncode == 0, result
    assert [w["name"] for w in json.loads(result.stdout)["workers"]] == ["pyro-env"]


# --- without a secret ----------------------------------------------------------------------------
# `--host 0.0.0.0` without `--insecure` (exit 2, with the reason) is covered for both the name
# server and the worker by tests/cli/test_commands.py::test_non_loopback_without_secret_is_refused.


# --- mutual TLS ----------------------------------------------------------------------------------


def tls_settings(ns: str, member: Member, secret: str | None = None) -> Settings:
    return with_secret(ns, secret, tls_cert=member.cert, tls_key=member.key, tls_ca=member.ca)


def test_job_over_mutual_tls(
    processes: Processes, pki: tuple[Member, Member], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    member, _ = pki
    env = {**NO_SECRET_ENV, **NO_TLS_ENV}
    ns_proc, ns = start_nameserver(member.flags(), env=env)  # TLS by flags
    processes.add(ns_proc)
    workers = [
        processes.add(
            start_worker(
                ns,
                ["--name", f"tls-w{i}", "--services", "compute", "--concurrency", "2"],
                env={**NO_SECRET_ENV, **member.env()},
                wait=False,
            )
        )  # TLS by environment
        for i in (1, 2)
    ]
    for worker in workers:
        worker.wait_ready()

    out = tmp_path / "results.jsonl"
    result = run_cli(
        "submit",
        str(write_job(tmp_path)),
        "--ns",
        ns,
        *member.flags(),
        "--out",
        str(out),
        "--json",
        "--quiet",
        env=env,
        cwd=tmp_path,
    )
    check_submit(result, out)

    for key, value in member.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PYROCLUSTER_SECRET", raising=False)
    with Cluster(ns, wait=10) as cluster:
        assert list(cluster.starmap("add", [(i, i) for i in range(500)])) == [2 * i for i in range(500)]
        status = cluster.status()
    assert sorted(w["name"] for w in status["workers"]) == ["tls-w1", "tls-w2"]
    assert all(w["state"] == "ready" for w in status["workers"])
    assert sum(w["done"] for w in status["workers"]) == 21 + 500

    # the certificate really is checked: its peer is the cluster member
    settings = tls_settings(ns, member)
    config.apply(settings)
    with auth.make_proxy(ns_uri(ns), settings, timeout_s=TIMEOUT_S) as proxy:
        proxy._pyroBind()
        assert proxy._pyroConnection.getpeercert()["subject"] == ((("commonName", "cluster member"),),)


@pytest.fixture(scope="module")
def tls_cluster(pki: tuple[Member, Member]) -> Iterator[str]:
    """A name server and a worker over mutual TLS, with the cluster secret too; the name server address."""
    member, _ = pki
    procs = Processes()
    try:
        ns_proc, ns = start_nameserver(member.flags(), env=secret_env())
        procs.add(ns_proc)
        procs.add(
            start_worker(
                ns,
                ["--name", "tls-sec", "--services", "compute", "--concurrency", "1", *member.flags()],
                env=secret_env(),
            )
        )
        yield ns
    finally:
        procs.stop_all()


def test_client_without_a_cluster_certificate_is_refused(
    tls_cluster: str, pki: tuple[Member, Member]
) -> None:
    member, stranger = pki
    ns = tls_cluster
    host, port = config.parse_address(ns)

    # a plain (non-TLS) Pyro5 client
    config.apply(Settings())
    with raw_proxy(ns_uri(ns)) as proxy, pytest.raises(Pyro5.errors.CommunicationError):
        proxy.list()

    # a TLS client that trusts the cluster CA but shows no certificate of its own
    context = ssl.create_default_context(cafile=member.ca)
    context.check_hostname = False
    refused = (ssl.SSLError, ConnectionError, Pyro5.errors.ConnectionClosedError)
    with (
        socket.create_connection((host, port), timeout=TIMEOUT_S) as raw_sock,
        pytest.raises(refused),
        context.wrap_socket(raw_sock) as tls_sock,
    ):
        conn = Pyro5.socketutil.SocketConnection(tls_sock)
        conn.send(hello(Pyro5.core.URI(ns_uri(ns))))
        connect_reply(conn)

    # the command line: no TLS at all, and a certificate from another CA (both with the secret)
    for flags in ([], stranger.flags()):
        result = run_cli("status", "--ns", ns, *flags, env=secret_env())
        assert result.returncode == 3, result
        error_line(result)

    # the cluster's own members still get in
    result = run_cli("status", "--ns", ns, "--json", *member.flags(), env=secret_env())
    assert result.returncode == 0, result
    assert [w["name"] for w in json.loads(result.stdout)["workers"]] == ["tls-sec"]


def test_tls_and_secret_both_hold(tls_cluster: str, pki: tuple[Member, Member]) -> None:
    member, _ = pki
    ns = tls_cluster
    # the certificate without the secret
    result = run_cli("status", "--ns", ns, *member.flags(), env={**NO_SECRET_ENV})
    assert result.returncode == 3, result
    assert "requires the cluster secret" in error_line(result)
    result = run_cli("status", "--ns", ns, *member.flags(), env=secret_env("not the secret"))
    assert result.returncode == 3, result
    assert "wrong cluster secret" in error_line(result)
    # the secret without the certificate
    result = run_cli("status", "--ns", ns, env=secret_env())
    assert result.returncode == 3, result
    # both
    settings = tls_settings(ns, member, SECRET)
    with Cluster(settings=settings, wait=10) as cluster:
        assert cluster.submit("add", 40, 2).result(timeout=30) == 42
    config.apply(settings)
    uris = worker_uris(ns, settings, "tls-sec")
    assert run_add(uris["compute"], settings)["outcomes"][0][:2] == [0, 42]
    wrong = tls_settings(ns, member, "not the secret")
    with pytest.raises(AuthenticationError, match="wrong cluster secret"):
        worker_info(uris["control"], wrong)


def test_big_values_beside_their_messages_keep_tls_and_the_secret(
    tls_cluster: str, pki: tuple[Member, Member]
) -> None:
    member, _ = pki
    big = bytes(range(256)) * (12 << 10)  # 3 MiB: sent and returned as attachments
    with Cluster(settings=tls_settings(tls_cluster, member, SECRET), wait=10) as cluster:
        assert cluster.submit("echo", big).result(timeout=60) == big


def test_marshal_over_tls_is_refused_too(tls_cluster: str, pki: tuple[Member, Member]) -> None:
    member, _ = pki
    settings = tls_settings(tls_cluster, member, SECRET)
    config.apply(settings)
    uri = worker_uris(tls_cluster, settings, "tls-sec")["compute"]
    marshal = Pyro5.serializers.MarshalSerializer()
    _, client_context = tls.tls_contexts(settings)
    with (
        socket.create_connection((uri.host, uri.port), timeout=TIMEOUT_S) as raw_sock,
        client_context.wrap_socket(raw_sock) as tls_sock,
    ):
        conn = Pyro5.socketutil.SocketConnection(tls_sock)
        conn.send(hello(uri))
        assert connect_reply(conn)[0] == Pyro5.protocol.MSG_CONNECTOK
        call = marshal.dumpsCall(uri.object, "run_batch", ([["add", [1, 2], {}, 5.0]],), {})
        conn.send(message(Pyro5.protocol.MSG_INVOKE, marshal.serializer_id, call, seq=1))
        reply = Pyro5.protocol.recv_stub(conn, [Pyro5.protocol.MSG_RESULT])
        assert (
            str(marshal.loads(reply.data))
            == "pyrocluster refuses the marshal serializer; use msgpack or serpent"
        )
    assert run_add(uri, settings)["outcomes"][0][:2] == [0, 42]


def test_msgpack_and_serpent_both_work_with_the_secret(secure: SecureCluster) -> None:
    for serializer in ("msgpack", "serpent"):
        settings = with_secret(secure.ns, serializer=serializer)
        config.apply(settings)
        assert run_add(secure.uris["compute"], settings, 1, 2)["outcomes"][0][:2] == [0, 3]
