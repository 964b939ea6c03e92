"""What security costs: 20,000 ``add`` calls through ``Cluster.map`` with and without secret and TLS.

Local clusters (a name server and two workers each, default settings otherwise) run side by
side: no security, the cluster secret, mutual TLS, both, and the secret's cluster used with a
submitter's role token instead of the secret (its handshake signs, and every call is checked
against the role). Rounds alternate between them so that drift on the machine hits every mode
alike; each figure is the median of the rounds, and the ratios are against no security and
against the secret in the same run.

    python -m bench.security_cost [--items 20000] [--rounds 3] [--workers 2] [--modes secret,token]

Needs the ``cryptography`` package (the ``test`` extra) to make the certificates.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyrocluster import tokens
from pyrocluster.config import Settings
from pyrocluster.coordinator.cluster import Cluster
from pyrocluster.local import LocalCluster
from tests.helpers.certs import CertificateAuthority, Member

SECRET = "bench-security-cost-secret"
TOKEN = tokens.issue(SECRET.encode(), "bench", tokens.Role.SUBMITTER, time.time(), 86400)
WARMUP_ITEMS = 2_000
"""Calls run before each timed map (connections, discovery, batch sizing)."""
MODES = ("none", "secret", "tls", "secret+tls", "token")


def child_env(mode: str, member: Member) -> dict[str, str]:
    """The environment of one mode's name server and workers (nothing inherited by accident)."""
    env = {"PYROCLUSTER_SECRET": "", "PYROCLUSTER_SECRET_FILE": "", **{k: "" for k in member.env()}}
    if "secret" in mode or mode == "token":  # the workers of the token mode hold the secret
        env["PYROCLUSTER_SECRET"] = SECRET
    if "tls" in mode:
        env.update(member.env())
    return env


def client_settings(mode: str, member: Member, ns: str) -> Settings:
    """The coordinator's settings for one mode."""
    tls = {"tls_cert": member.cert, "tls_key": member.key, "tls_ca": member.ca} if "tls" in mode else {}
    if mode == "token":
        return Settings(token=TOKEN).with_ns(ns)
    return Settings(secret=SECRET.encode() if "secret" in mode else None, **tls).with_ns(ns)  # type: ignore[arg-type]


def measure(settings: Settings, items: int) -> float:
    """Tasks per second of one ``map`` of ``items`` adds (after a warm-up), checking every result."""
    with Cluster(settings=settings, wait=30) as cluster:
        warm = list(cluster.starmap("add", [(i, 1) for i in range(WARMUP_ITEMS)]))
        assert warm == [i + 1 for i in range(WARMUP_ITEMS)]
        args = [(i, i) for i in range(items)]
        started = time.perf_counter()
        results = list(cluster.starmap("add", args))
        elapsed = time.perf_counter() - started
    if results != [2 * i for i in range(items)]:
        raise AssertionError("wrong results")
    return items / elapsed


def latencies(settings: Settings, connects: int = 200, pings: int = 2_000) -> tuple[float, float]:
    """(ms per new connection + ping, ms per ping on an open connection) to a worker's control object."""
    from pyrocluster import auth, config

    config.apply(settings)
    with auth.make_proxy(f"PYRO:Pyro.NameServer@{settings.ns_address}", settings, timeout_s=10) as ns:
        listing = ns.list(prefix="pyrocluster.worker.")
    uri = next(uri for name, uri in sorted(listing.items()) if name.endswith(".control"))
    started = time.perf_counter()
    for _ in range(connects):
        with auth.make_proxy(uri, settings, timeout_s=10) as proxy:
            proxy.ping()
    connect_ms = (time.perf_counter() - started) * 1000 / connects
    with auth.make_proxy(uri, settings, timeout_s=10) as proxy:
        proxy.ping()
        started = time.perf_counter()
        for _ in range(pings):
            proxy.ping()
        ping_ms = (time.perf_counter() - started) * 1000 / pings
    return connect_ms, ping_ms


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print one line per mode."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000, help="add calls per timed map")
    parser.add_argument("--rounds", type=int, default=3, help="timed maps per mode (median reported)")
    parser.add_argument("--workers", type=int, default=2, help="workers per local cluster")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes to compare")
    opts = parser.parse_args(argv)
    modes = [m for m in opts.modes.split(",") if m in MODES]

    with tempfile.TemporaryDirectory(prefix="bench-security-") as directory:
        member = CertificateAuthority(Path(directory), "bench").issue("bench member")
        clusters: dict[str, LocalCluster] = {}
        try:
            for mode in modes:
                print(
                    f"starting a local cluster ({opts.workers} workers): {mode}", file=sys.stderr, flush=True
                )
                clusters[mode] = LocalCluster(opts.workers, env=child_env(mode, member))
            rates: dict[str, list[float]] = {mode: [] for mode in modes}
            for round_no in range(opts.rounds):
                for mode in modes:
                    rate = measure(client_settings(mode, member, clusters[mode].address), opts.items)
                    rates[mode].append(rate)
                    print(
                        f"round {round_no + 1}: {mode:<10} {rate:10,.0f} tasks/s", file=sys.stderr, flush=True
                    )
            lat = {mode: latencies(client_settings(mode, member, clusters[mode].address)) for mode in modes}
        finally:
            for local in clusters.values():
                local.close()

    base = statistics.median(rates[modes[0]])
    secret = statistics.median(rates["secret"]) if "secret" in rates else None
    cpus = os.cpu_count()
    print(f"{opts.items:,} add calls via Cluster.map, {opts.workers} local workers, {cpus} CPUs, "
          f"median of {opts.rounds} rounds")  # fmt: skip
    heads = f"{'mode':<12}{'tasks/s':>12}{'vs ' + modes[0]:>12}{'vs secret':>11}"
    print(f"{heads}{'connect+ping ms':>18}{'ping ms':>10}")
    for mode in modes:
        median = statistics.median(rates[mode])
        connect_ms, ping_ms = lat[mode]
        vs_secret = f"{median / secret:>11.2f}" if secret else f"{'-':>11}"
        print(
            f"{mode:<12}{median:>12,.0f}{median / base:>12.2f}{vs_secret}{connect_ms:>18.2f}{ping_ms:>10.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
