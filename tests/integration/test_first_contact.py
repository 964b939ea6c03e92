"""The Python API at first contact: every ordinary mistake answered at once with its real cause."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrocluster import (
    AuthenticationError,
    Cluster,
    ClusterUnreachable,
    ConfigError,
    TaskTimeout,
    WorkerUnavailable,
)
from pyrocluster.local import start_nameserver, start_worker
from tests.conftest import Processes, run_cli, running_cluster, wait_for
from tests.helpers.certs import CertificateAuthority

SECRET = "first-contact-secret"
NO_SECRET_ENV = {"PYROCLUSTER_SECRET": "", "PYROCLUSTER_SECRET_FILE": ""}
PLAIN_ENV = {"PYROCLUSTER_TLS_CERT": "", "PYROCLUSTER_TLS_KEY": "", "PYROCLUSTER_TLS_CA": "", **NO_SECRET_ENV}
"""Neither a secret nor TLS, whatever the environment the tests run in says."""
FAST_S = 2.0
"""The longest any of these mistakes may take to be answered."""


@pytest.fixture
def no_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*NO_SECRET_ENV, "PYROCLUSTER_TLS_CERT", "PYROCLUSTER_TLS_KEY", "PYROCLUSTER_TLS_CA"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def secured(processes: Processes, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A name server and a worker that need SECRET; the secret file ends with a newline."""
    secret_file = tmp_path / "cluster.secret"
    secret_file.write_text(SECRET + "\n")
    proc, ns = start_nameserver(["--secret-file", str(secret_file)], env=NO_SECRET_ENV)
    processes.add(proc)
    processes.add(
        start_worker(ns, ["--services", "compute", "--concurrency", "1"], env={"PYROCLUSTER_SECRET": SECRET})
    )
    yield ns, secret_file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_name_server_there_is_cluster_unreachable_at_once(no_secret_env):
    started = time.monotonic()
    with pytest.raises(ClusterUnreachable, match="cannot reach the name server"):
        Cluster(f"127.0.0.1:{free_port()}")
    assert time.monotonic() - started < FAST_S


def test_a_local_cluster_given_a_tasks_file_that_is_not_there_is_a_config_error_naming_it(
    no_secret_env, tmp_path
):
    missing = tmp_path / "my_tasks.py"
    with pytest.raises(ConfigError) as caught:
        Cluster.local(workers=1, worker_args=["--tasks", str(missing)])
    assert str(caught.value) == f"--tasks {missing}: no such file"  # not "did not become ready" + tracebacks


def test_closing_a_local_cluster_with_a_long_task_running_stops_its_workers_at_once(no_secret_env):
    """Nobody reads the result any more: the workers do not run the task to its end first."""
    cluster = Cluster.local(workers=1, worker_args=["--concurrency", "1"])
    local = cluster.local_cluster
    assert local is not None
    future = cluster.submit("sleep", 30)
    wait_for(lambda: future.running(), 20, what="the task to start")
    started = time.monotonic()
    cluster.close()
    assert time.monotonic() - started < 5, "close() waited for the task"
    assert all(w.proc.poll() is not None for w in local.workers)
    with pytest.raises(WorkerUnavailable):
        future.result(timeout=5)


def test_a_wrong_or_missing_secret_is_an_authentication_error_at_once(no_secret_env, secured):
    ns, _ = secured
    for secret in ("not the secret", None):
        started = time.monotonic()
        with pytest.raises(AuthenticationError):
            Cluster(ns, secret=secret)
        assert time.monotonic() - started < FAST_S, secret


def test_the_secret_from_a_file_read_by_hand_or_from_the_environment_works(
    no_secret_env, secured, monkeypatch
):
    ns, secret_file = secured
    with Cluster(ns, secret=secret_file.read_text(), wait=20) as cluster:  # ends with a newline
        assert cluster.submit("add", 1, 2).result(timeout=30) == 3
    monkeypatch.setenv("PYROCLUSTER_SECRET_FILE", str(secret_file))
    with Cluster(ns, wait=20) as cluster:
        assert cluster.submit("add", 2, 2).result(timeout=30) == 4


@pytest.fixture(scope="module")
def plain_ns() -> Iterator[str]:
    """A name server and a one-slot worker without secret or TLS, shared by the module's tests
    that only submit."""
    with running_cluster(["--services", "compute", "--concurrency", "1"], env=PLAIN_ENV) as ns:
        yield ns


def test_call_options_no_worker_would_take_are_refused_when_set(no_secret_env, plain_ns):
    """Not a call that waits ``wait`` for a worker carrying the tags f, a, s and t."""
    with pytest.raises(ValueError, match="retries must be 0 or more"):
        Cluster(plain_ns, retries=-1)
    with Cluster(plain_ns, wait=30) as cluster:
        with pytest.raises(TypeError, match=r"tags=\['fast'\]"):
            cluster.options(tags="fast")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout must be in"):
            cluster.options(timeout=0)
        assert cluster.options(tags=[], timeout=5, retries=0).submit("add", 1, 2).result(timeout=30) == 3


@pytest.mark.parametrize(
    ("given", "error", "words"),
    [
        ({"probe_timeout": 0}, ValueError, "probe_timeout must be in (0,"),
        ({"probe_timeout": float("nan")}, TypeError, "probe_timeout must be a number"),
        ({"wait": -1}, ValueError, "wait must be in [0,"),
        ({"wait": float("nan")}, TypeError, "wait must be a number"),
        ({"max_batch": "64"}, TypeError, "max_batch must be an integer"),
    ],
)
def test_a_cluster_setting_that_cannot_work_is_refused_naming_it(
    no_secret_env, plain_ns, given, error, words
):
    """Not a cluster that sets every worker aside (a probe_timeout of 0: a 2 s call failed after
    four attempts, "stopped answering its liveness probe") or waits for ever (a NaN wait)."""
    with pytest.raises(error) as caught:
        Cluster(plain_ns, **given).close()
    assert words in str(caught.value)
    with Cluster(plain_ns, probe_timeout=0.5, wait=0) as cluster:  # the edges that do work
        assert cluster.submit("sleep", 1.5).result(timeout=30) == 1.5


@pytest.mark.parametrize("written", ["http://{ns}", "PYRO:Pyro.NameServer@{ns}"])
def test_a_name_server_address_that_cannot_be_used_is_refused_at_once(no_secret_env, plain_ns, written):
    """Not a cluster that never learns a worker, each call failing after ``wait``; the CLI says the
    same, exit 2."""
    started = time.monotonic()
    address = written.format(ns=plain_ns)
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        Cluster(address, wait=30).close()
    assert time.monotonic() - started < FAST_S
    result = run_cli("status", "--ns", address)
    assert result.returncode == 2 and result.stderr.startswith("error: "), result
    assert "HOST:PORT" in result.stderr, result


def test_a_mistyped_task_fails_at_once_with_the_closest_name(no_secret_env, plain_ns):
    with Cluster(plain_ns, wait=30) as cluster:
        assert cluster.submit("add", 1, 1).result(timeout=30) == 2  # the catalog is known
        started = time.monotonic()
        with pytest.raises(
            WorkerUnavailable, match="no live worker offers compute task 'ad' \\(did you mean 'add'\\?\\)"
        ):
            cluster.submit("ad", 1, 2).result(timeout=30)
        with pytest.raises(WorkerUnavailable, match="did you mean 'count_primes'"):
            list(cluster.map("count_prime", [1, 2]))
        assert time.monotonic() - started < FAST_S


def test_a_function_given_as_the_task_is_a_type_error_naming_task_and_tasks(no_secret_env, plain_ns):

    def inc(x: int) -> int:
        return x + 1

    with Cluster(plain_ns, wait=30) as cluster:
        for attempt in (
            lambda: cluster.submit(inc, 1),  # type: ignore[arg-type]
            lambda: cluster.map(inc, [1]),  # type: ignore[arg-type]
            lambda: cluster.starmap(inc, [(1,)]),  # type: ignore[arg-type]
            lambda: cluster.options(priority=1).submit(inc, 1),  # type: ignore[arg-type]
        ):
            with pytest.raises(
                TypeError, match="tasks are called by name.*'inc'.*@pyrocluster.task.*--tasks"
            ):
                attempt()


def test_an_overrun_ends_task_timeout_after_one_attempt_unless_retry_on_error(
    no_secret_env, nameserver, worker_factory
):
    worker_factory(1, "--services", "compute", "--concurrency", "2")
    with Cluster(nameserver, wait=30, retries=3) as cluster:
        started = time.monotonic()
        once = cluster.options(timeout=0.5).submit("sleep", 3)
        with pytest.raises(TaskTimeout):
            once.result(timeout=30)
        assert once.attempts == 1 and time.monotonic() - started < 2.5
        again = cluster.options(timeout=0.5, retries=1, retry_on_error=True).submit("sleep", 3)
        with pytest.raises(TaskTimeout):
            again.result(timeout=30)
        assert again.attempts == 2


def test_a_plain_client_of_a_tls_name_server_is_told_it_expects_tls(processes, tmp_path):
    member = CertificateAuthority(tmp_path, "cluster").issue("member")
    proc, ns = start_nameserver(member.flags(), env=NO_SECRET_ENV)
    processes.add(proc)
    result = run_cli("status", "--ns", ns, env=PLAIN_ENV)
    assert result.returncode == 3, result
    assert "if it expects TLS, give --tls-cert, --tls-key and --tls-ca" in result.stderr, result


@pytest.mark.parametrize("given", [{"secret": 123}, {"token": 4.5}, {"secret": ["s"]}])
def test_a_credential_that_is_not_text_is_a_type_error_naming_it(given):
    name = next(iter(given))
    with pytest.raises(TypeError, match=f"{name} must be a string or bytes"):
        Cluster("127.0.0.1:1", **given)


def test_a_crawl_option_of_the_wrong_type_is_refused_before_the_crawl_starts(no_secret_env, plain_ns):
    with Cluster(plain_ns, wait=30) as cluster:
        started = time.monotonic()
        with pytest.raises(TypeError, match="crawl option max_pages must be an int, got str"):
            next(cluster.crawl(["http://127.0.0.1:9/"], max_pages="x"))
        assert time.monotonic() - started < FAST_S
