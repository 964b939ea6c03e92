"""``pyrocluster tls init`` / ``tls issue``: what they make runs a cluster under mutual TLS."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from pyrocluster.local import start_nameserver, start_worker
from tests.conftest import Processes, run_cli

CLEAN_ENV = {
    "PYROCLUSTER_SECRET": "",
    "PYROCLUSTER_SECRET_FILE": "",
    "PYROCLUSTER_TLS_CERT": "",
    "PYROCLUSTER_TLS_KEY": "",
    "PYROCLUSTER_TLS_CA": "",
    "PYROCLUSTER_CONFIG": "",
}


def tls_flags(pki: Path, name: str) -> list[str]:
    return [
        "--tls-cert",
        str(pki / f"{name}.crt"),
        "--tls-key",
        str(pki / f"{name}.key"),
        "--tls-ca",
        str(pki / "ca.crt"),
    ]


def make_pki(directory: Path, *names: str) -> Path:
    result = run_cli("tls", "init", str(directory), env=CLEAN_ENV)
    assert result.returncode == 0, result
    for name in names:
        result = run_cli("tls", "issue", str(directory), name, "--ip", "127.0.0.1", "--host", "localhost")
        assert result.returncode == 0, result
    return directory


def test_issued_certificates_run_a_job_and_another_cas_are_refused(
    tmp_path: Path, processes: Processes
) -> None:
    pki = make_pki(tmp_path / "pki", "ns", "w1", "w2", "client")
    for key in ("ca.key", "ns.key", "w1.key", "client.key"):
        assert stat.S_IMODE((pki / key).stat().st_mode) == 0o600, key
    ns_proc, ns = start_nameserver(tls_flags(pki, "ns"), env=CLEAN_ENV)
    processes.add(ns_proc)
    workers = [
        processes.add(
            start_worker(
                ns, ["--name", name, "--concurrency", "2", *tls_flags(pki, name)], env=CLEAN_ENV, wait=False
            )
        )
        for name in ("w1", "w2")
    ]
    for worker in workers:
        worker.wait_ready()

    job = tmp_path / "tls.yaml"
    job.write_text(
        "name: tls\ntasks:\n  - id: double\n    call: add\n    map: "
        + json.dumps([[i, i] for i in range(30)])
        + "\n"
    )
    out = tmp_path / "tls.results.jsonl"
    result = run_cli(
        "submit", str(job), "--ns", ns, "--out", str(out), "--json", "--quiet", *tls_flags(pki, "client"),
        env=CLEAN_ENV, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["result"] for r in records) == [2 * i for i in range(30)]
    assert {r["worker"] for r in records} <= {"w1", "w2"}

    rogue = make_pki(tmp_path / "rogue", "client")
    for command in (["status"], ["worker", "--name", "rogue"]):
        result = run_cli(*command, "--ns", ns, *tls_flags(rogue, "client"), env=CLEAN_ENV)
        assert result.returncode == 3, result
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result
    status = run_cli("status", "--ns", ns, "--json", *tls_flags(pki, "client"), env=CLEAN_ENV)
    assert status.returncode == 0, status
    assert sorted(w["name"] for w in json.loads(status.stdout)["workers"]) == ["w1", "w2"]


def test_tls_init_refuses_to_replace_a_ca_and_issue_needs_one(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    before = (pki / "ca.key").read_bytes()
    result = run_cli("tls", "init", str(pki))
    assert result.returncode == 2 and "refusing to replace" in result.stderr, result
    assert (pki / "ca.key").read_bytes() == before
    result = run_cli("tls", "issue", str(tmp_path / "none"), "w1")
    assert result.returncode == 2 and "tls init" in result.stderr, result
    result = run_cli("tls", "issue", str(pki), "w1", "--ip", "not-an-ip")
    assert result.returncode == 2 and result.stderr.startswith("error: --ip:"), result
