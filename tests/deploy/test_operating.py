"""Running it for real: JSON log lines, health ports and certificates under the mishaps of operators."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from pyrocluster import pki
from pyrocluster.local import ManagedProcess
from tests.conftest import Processes, wait_for

pytestmark = pytest.mark.timeout(60)
LOOPBACK = ipaddress.ip_address("127.0.0.1")

CLEAN = {
    "PYROCLUSTER_SECRET": "",
    "PYROCLUSTER_SECRET_FILE": "",
    "PYROCLUSTER_CONFIG": "",
    "PYROCLUSTER_TLS_CERT": "",
    "PYROCLUSTER_TLS_KEY": "",
    "PYROCLUSTER_TLS_CA": "",
}


def run_cli(args: list[str | bytes], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """``pyrocluster ARGS`` to its end; stdout and stderr as bytes."""
    return subprocess.run(
        [sys.executable, "-m", "pyrocluster", *args],
        cwd=cwd,
        capture_output=True,
        env={**os.environ, **CLEAN},
        timeout=30,
        check=False,
    )


def test_json_logs_stay_one_object_per_line_for_a_file_name_that_is_not_utf8(tmp_path: Path) -> None:
    job = os.fsencode(str(tmp_path)) + b"/job\xff.yaml"  # what the shell passes for a Latin-1 name
    done = run_cli(["submit", job, "--log-format", "json", "--ns", "127.0.0.1:1"], tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.decode("utf-8").splitlines()
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["level"] == "error" and "no such file" in record["msg"], record


def http_get(address: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    """(status, body) of one request to ``address``."""
    import http.client

    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request(method, path)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def hang_up_hard(address: str) -> None:
    """Send a probe and reset the connection without waiting for the answer (a probe timing out)."""
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
    sock.close()


def test_health_port_survives_probes_that_give_up_and_answers_head(processes: Processes) -> None:
    ns = processes.add(
        ManagedProcess(["nameserver", "--port", "0", "--health-port", "0", "--log-format", "json"], CLEAN)
    )
    address = ns.wait_ready().rsplit("health at ", 1)[1].strip()
    ns.signal(signal.SIGSTOP)  # stopped (a debugger, a paused container): the probes time out
    for _ in range(3):
        hang_up_hard(address)
    ns.signal(signal.SIGCONT)
    wait_for(lambda: http_get(address, "/livez")[0] == 200, 10, what="/livez after SIGCONT")
    heads = [http_get(address, path, "HEAD") for path in ("/livez", "/readyz")]
    assert ns.stop() == 0
    for line in ns.output:
        if not line.startswith("pyrocluster nameserver"):  # stdout's ready and stopped lines
            json.loads(line)  # every stderr line a JSON record: no traceback of a hung-up probe
    assert heads == [(200, b""), (200, b"")]  # HEAD as GET, without the body


def write_certificate(
    path: Path, key_path: Path, ca: tuple[x509.Certificate, pki.Key], days: tuple[int, int]
) -> None:
    """A member certificate of ``ca`` valid from ``days[0]`` to ``days[1]`` days from now."""
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "member")]))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(LOOPBACK)]), critical=False)
        .sign(ca[1], hashes.SHA256())
    )
    path.write_bytes(pki.cert_pem(cert))
    pki.write_private(key_path, pki.key_pem(key))


@pytest.mark.parametrize(("days", "said"), [((-10, -1), "expired"), ((1, 10), "not valid before")])
def test_a_name_server_refuses_to_start_on_a_certificate_out_of_date(
    tmp_path: Path, days: tuple[int, int], said: str
) -> None:
    ca = pki.make_ca("test CA", days=2)
    (tmp_path / "ca.crt").write_bytes(pki.cert_pem(ca[0]))
    write_certificate(tmp_path / "m.crt", tmp_path / "m.key", ca, days)
    tls = ["--tls-cert", "m.crt", "--tls-key", "m.key", "--tls-ca", "ca.crt"]
    done = run_cli(["nameserver", "--port", "0", *tls], tmp_path)
    assert done.returncode == 2, done
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], lines
    assert "m.crt" in lines[0], lines
    assert b"ready" not in done.stdout


def test_tls_files_that_cannot_be_loaded_are_named(tmp_path: Path) -> None:
    ca = pki.make_ca("test CA", days=2)
    (tmp_path / "ca.crt").write_bytes(pki.cert_pem(ca[0]))
    write_certificate(tmp_path / "a.crt", tmp_path / "a.key", ca, (0, 1))
    write_certificate(tmp_path / "b.crt", tmp_path / "b.key", ca, (0, 1))
    cases = {
        "gone.key": ["--tls-cert", "a.crt", "--tls-key", "gone.key", "--tls-ca", "ca.crt"],
        "gone-ca.crt": ["--tls-cert", "a.crt", "--tls-key", "a.key", "--tls-ca", "gone-ca.crt"],
        "b.key": ["--tls-cert", "a.crt", "--tls-key", "b.key", "--tls-ca", "ca.crt"],  # not a.crt's key
        "a.crt": ["--tls-cert", "a.crt", "--tls-ca", "ca.crt"],  # no key given, none in the file
    }
    for named, flags in cases.items():
        done = run_cli(["status", "--ns", "127.0.0.1:1", *flags], tmp_path)
        lines = done.stderr.decode().splitlines()
        assert done.returncode == 2, (named, lines)
        assert len(lines) == 1 and named in lines[0], (named, lines)


@pytest.mark.parametrize("table", ["[worker.extra]", "[[worker]]", "[ worker . extra ]"])
def test_an_unknown_nested_table_is_named_with_its_line(tmp_path: Path, table: str) -> None:
    (tmp_path / "c.toml").write_text(f'ns = "127.0.0.1:1"\n\n{table}\nname = "w"\n')
    done = run_cli(["status", "--config", "c.toml"], tmp_path)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 2, lines
    assert len(lines) == 1 and "c.toml, line 3" in lines[0], lines


NOISY_TASK = """
import logging

from pyrocluster import task


@task
def noisy(n):
    log = logging.getLogger("user.task")
    log.warning("two\\nlines %s", n)
    try:
        raise ValueError("multi\\nline")
    except ValueError:
        log.exception("caught")
    return n
"""


def test_task_logs_of_a_process_pool_worker_are_json_records(
    nameserver: str, processes: Processes, tmp_path: Path
) -> None:
    from pyrocluster import Cluster

    tasks = tmp_path / "noisy.py"
    tasks.write_text(NOISY_TASK)
    args = ["worker", "--ns", nameserver, "--name", "jw", "--pool", "process", "--concurrency", "2"]
    worker = processes.add(ManagedProcess([*args, "--tasks", str(tasks), "--log-format", "json"], CLEAN))
    worker.wait_ready()
    with Cluster(nameserver, wait=10) as cluster:
        assert [cluster.submit("noisy", n).result(timeout=20) for n in range(3)] == [0, 1, 2]
    assert worker.stop() == 0
    records = [json.loads(line) for line in worker.output if not line.startswith("pyrocluster worker")]
    task_records = [r for r in records if r["logger"] == "user.task"]
    assert len(task_records) == 6, records
    assert all(r.get("worker") == "jw" for r in task_records), task_records
    assert any("multi\nline" in r.get("exc", "") for r in task_records), task_records


def test_a_tls_worker_told_a_plain_name_server_says_so_at_once(nameserver: str, tmp_path: Path) -> None:
    ca = pki.make_ca("test CA", days=2)
    (tmp_path / "ca.crt").write_bytes(pki.cert_pem(ca[0]))
    write_certificate(tmp_path / "m.crt", tmp_path / "m.key", ca, (0, 1))
    tls = ["--tls-cert", "m.crt", "--tls-key", "m.key", "--tls-ca", "ca.crt"]
    started = time.monotonic()
    done = run_cli(["worker", "--ns", nameserver, "--wait", "25", "--name", "tw", *tls], tmp_path)
    assert time.monotonic() - started < 15  # not the whole --wait: waiting would not help
    lines = [line for line in done.stderr.decode().splitlines() if "error" in line]
    assert done.returncode == 3 and len(lines) == 1, lines
    assert "does not speak TLS" in lines[0], lines


def test_dashboard_json_logs_stay_json_when_a_client_sends_garbage(
    nameserver: str, processes: Processes
) -> None:
    args = ["dashboard", "--ns", nameserver, "--port", "0", "--log-format", "json"]
    dashboard = processes.add(ManagedProcess(args, CLEAN))
    host, port = dashboard.wait_ready().split("http://", 1)[1].rstrip("/").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")  # a port scanner, a confused client
        assert sock.recv(100).startswith(b"HTTP/1.1 400")
    assert dashboard.stop() == 0
    logged = [line for line in dashboard.output if not line.startswith("pyrocluster dashboard")]
    records = [json.loads(line) for line in logged]
    assert any("Invalid HTTP request" in r["msg"] for r in records), records


@pytest.mark.parametrize("command", ["worker", "nameserver"])
def test_a_clean_stop_logs_no_liveness_failure(nameserver: str, processes: Processes, command: str) -> None:
    watchdog = {"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "100000"}  # a probe every 0.05 s
    args = ["--ns", nameserver, "--name", "cw"] if command == "worker" else ["--port", "0"]
    proc = processes.add(ManagedProcess([command, *args, "--health-port", "0"], {**CLEAN, **watchdog}))
    address = proc.wait_ready().rsplit("health", 1)[1].split()[-1]
    wait_for(lambda: http_get(address, "/livez")[0] == 200, 10, what="/livez")
    assert proc.stop() == 0
    assert not [line for line in proc.output if "liveness probe failed" in line], list(proc.output)


def test_the_health_port_listens_on_ipv6_loopback_as_the_servers_do(processes: Processes) -> None:
    args = ["nameserver", "--port", "0", "--health-host", "::1", "--health-port", "0"]
    ns = processes.add(ManagedProcess(args, CLEAN))
    address = ns.wait_ready().rsplit("health at ", 1)[1].strip()
    assert address.startswith("[::1]:"), address  # as a URL takes it
    host, port = address.rsplit(":", 1)
    assert http_get(f"{host.strip('[]')}:{port}", "/livez") == (200, b'{"status": "ok"}')


def test_a_ca_bundle_keeping_an_expired_certificate_beside_the_current_ca_is_taken(tmp_path: Path) -> None:
    ca = pki.make_ca("test CA", days=2)
    write_certificate(tmp_path / "old.crt", tmp_path / "old.key", ca, (-10, -1))
    (tmp_path / "bundle.crt").write_bytes((tmp_path / "old.crt").read_bytes() + pki.cert_pem(ca[0]))
    write_certificate(tmp_path / "m.crt", tmp_path / "m.key", ca, (0, 1))
    tls = ["--tls-cert", "m.crt", "--tls-key", "m.key", "--tls-ca", "bundle.crt"]
    done = run_cli(["status", "--ns", "127.0.0.1:1", *tls], tmp_path)
    assert done.returncode == 3, done.stderr  # on to the (absent) name server: the files were fine
