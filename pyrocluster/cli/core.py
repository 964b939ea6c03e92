"""The cluster commands: nameserver, worker, submit, status. Thin: parse, call, render."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from pyrocluster import logs, render
from pyrocluster.cli.common import (
    EXIT_OK,
    cancel_on_signals,
    command,
    direct_option,
    health_options,
    listen_options,
    require_secret,
    settings_from,
    shared_options,
    stop_on_signals,
    supervision,
    value_cap_option,
    with_direct,
    with_value_cap,
)
from pyrocluster.config import check_bind
from pyrocluster.defaults import (
    DEFAULT_DRAIN_TIMEOUT_S,
    DEFAULT_FORGET_AFTER_S,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_NS_WAIT_S,
)
from pyrocluster.errors import ClusterUnreachable, ConfigError
from pyrocluster.listed_jobs import ACTIVE, DEFAULT_LIMIT


@click.command()
@listen_options(None, "Port (0 picks a free one) [default: the port of --ns / PYROCLUSTER_NS, else 9090].")
@click.option(
    "--storage", default="memory", show_default=True, help="memory, or PATH.sqlite to persist registrations."
)
@click.option(
    "--forget-after",
    type=click.FloatRange(min=0),
    default=DEFAULT_FORGET_AFTER_S,
    show_default=True,
    metavar="SECONDS",
    help="Forget a registered worker or job silent this long (killed without unregistering); 0: never.",
)
@health_options
@shared_options
@command
def nameserver(
    host: str, port: int | None, storage: str, forget_after: float, insecure: bool, **kw: Any
) -> int:
    """Run the Pyro5 name server that workers and coordinators meet at."""
    from pyrocluster.nameserver.reaper import Reaper
    from pyrocluster.nameserver.server import bound_address, ping_nameserver, serve_until, start_nameserver

    settings = settings_from(kw)
    require_secret(settings, "run a name server")
    if port is None:
        port = settings.ns_port  # from --ns or PYROCLUSTER_NS, so one variable sets up every command
    try:
        check_bind(host, settings, insecure)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    sup = supervision(kw, settings, insecure, lambda: ping_nameserver(settings, address), lambda: None)
    daemon = start_nameserver(settings, host, port, storage)
    address = bound_address(daemon)
    stop = threading.Event()
    stop_on_signals(stop)
    reaper = Reaper(settings, daemon.nameserver, forget_after)
    reaper.start()
    sup.start()
    health = f", health at {sup.health_address}" if sup.health_address else ""
    render.line(f"pyrocluster nameserver ready at {address} (storage {storage}){health}")
    sup.ready()
    try:
        serve_until(daemon, stop, on_stop=sup.stopping)
    finally:
        reaper.stop()
        sup.close()
    return EXIT_OK


def _split(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


@click.command()
@click.option("--name", default="", help="Worker name [default: <hostname>-<pid>].")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (reachable by coordinators)."
)
@click.option(
    "--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="Port (0 picks a free one)."
)
@click.option("--services", default="compute,crawl", show_default=True, help="Services to offer.")
@click.option(
    "--tasks",
    "task_modules",
    multiple=True,
    metavar="MODULE_OR_FILE",
    help="User tasks to load (repeatable).",
)
@click.option(
    "--concurrency", type=click.IntRange(1, 4096), default=None, help="Compute slots [default: CPUs]."
)
@click.option(
    "--pool",
    type=click.Choice(["process", "thread"]),
    default="process",
    show_default=True,
    help="Run compute tasks in processes (CPU-bound) or threads (I/O-bound).",
)
@click.option(
    "--crawl-concurrency",
    type=click.IntRange(1, 1024),
    default=16,
    show_default=True,
    help="Concurrent fetches of the crawl service.",
)
@click.option("--tags", default="", help="Comma-separated tags that jobs can ask for.")
@click.option(
    "--resources",
    "resource_spec",
    default="",
    metavar="NAME=AMOUNT,...",
    help="Compute resources, e.g. cpu=8,memory=32GiB,licence=2 [default: cpu=slots, memory=RAM].",
)
@click.option("--gpus", default="", metavar="IDS", help="GPU device ids, e.g. 0,1 (the gpu resource).")
@click.option(
    "--heartbeat",
    type=click.FloatRange(0.1, 3600),
    default=DEFAULT_HEARTBEAT_S,
    show_default=True,
    help="Seconds between registration checks.",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(0, 86400),
    default=DEFAULT_DRAIN_TIMEOUT_S,
    show_default=True,
    help="Seconds to finish held tasks when stopping.",
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0, 86400),
    default=DEFAULT_NS_WAIT_S,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the name server to appear at start-up.",
)
@click.option("--insecure", is_flag=True, help="Allow a non-loopback address without a cluster secret.")
@value_cap_option
@direct_option
@health_options
@shared_options
@command
def worker(
    name: str,
    host: str,
    port: int,
    services: str,
    task_modules: tuple[str, ...],
    concurrency: int | None,
    pool: str,
    crawl_concurrency: int,
    tags: str,
    resource_spec: str,
    gpus: str,
    heartbeat: float,
    drain_timeout: float,
    wait_s: float,
    insecure: bool,
    max_value_bytes: int | None,
    direct: bool | None,
    **kw: Any,
) -> int:
    """Run a worker offering compute and crawl services."""
    from pyrocluster.nameserver.registry import name_problem

    if problem := name_problem(name):
        raise ConfigError(f"--name {name!r}: {problem}")
    if pool == "process" and "compute" in _split(services):
        from pyrocluster.slots.forkserver import start_forkserver

        start_forkserver()  # the slot processes' server loads while this one sets up
    from pyrocluster.resources import parse_spec
    from pyrocluster.worker import Worker, WorkerOptions

    settings = with_direct(with_value_cap(settings_from(kw, info_logs=True), max_value_bytes), direct)
    require_secret(settings, "run a worker")
    try:
        offered = parse_spec(resource_spec)
    except ValueError as exc:
        raise ConfigError(f"--resources: {exc}") from None
    options = WorkerOptions(
        name=name,
        host=host,
        port=port,
        services=_split(services),
        task_modules=list(task_modules),
        concurrency=concurrency or 0,
        pool=pool,
        crawl_concurrency=crawl_concurrency,
        tags=_split(tags),
        resources=offered,
        gpus=_split(gpus),
        heartbeat_s=heartbeat,
        drain_timeout_s=drain_timeout,
        ns_wait_s=wait_s,
        insecure=insecure,
    )
    wk = Worker(settings, options)
    logs.bind(worker=wk.name)
    stop_on_signals(wk.state.stop_event)
    sup = supervision(kw, settings, insecure, wk.probe, wk.readiness)
    wk.start()
    sup.start()
    wk.on_drain.append(sup.stopping)
    health = f" health {sup.health_address}" if sup.health_address else ""
    render.line(
        f"pyrocluster worker {wk.name} ready at {wk.state.address} services {','.join(options.services)} "
        f"slots {wk.slots_n} pool {pool} tasks {len(wk.state.tasks)}{health}"
    )
    sup.ready()
    wk.serve()
    sup.close()
    render.line(f"pyrocluster worker {wk.name} stopped")
    return EXIT_OK


def check_task_files(task_modules: tuple[str, ...], local: int | None) -> None:
    """ConfigError (exit 2) for ``--tasks`` without ``--local`` or a ``--tasks`` file that is not there."""
    if task_modules and not local:
        raise ConfigError(
            "--tasks needs --local: it names the user tasks of the workers --local starts "
            "(start your own workers with `pyrocluster worker --tasks ...`)"
        )
    for spec in task_modules:
        if (spec.endswith(".py") or "/" in spec or "\\" in spec) and not Path(spec).is_file():
            raise ConfigError(f"--tasks {spec}: no such file")


@click.command()
@click.argument("job_file", metavar="JOB.yaml")
@click.option("--out", type=click.Path(dir_okay=False), help="Results file (overrides the job's output).")
@click.option("--resume", is_flag=True, help="Keep ok results from the results file and run the rest.")
@click.option("--overwrite", is_flag=True, help="Replace the results file even if its run did not finish.")
@click.option(
    "--local",
    type=click.IntRange(1, 64),
    default=None,
    metavar="N",
    help="Start a private name server and N workers on loopback for this job.",
)
@click.option(
    "--tasks",
    "task_modules",
    multiple=True,
    metavar="MODULE_OR_FILE",
    help="With --local: user tasks the local workers load (repeatable).",
)
@click.option(
    "--wait",
    type=click.FloatRange(0, 3600),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for a worker offering each needed service or tag.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option(
    "--quiet", is_flag=True, help="No progress display and no summary table; failed tasks are still listed."
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check everything submit checks (the file, every problem at once; the workers) and run nothing.",
)
@value_cap_option
@direct_option
@shared_options
@command
def submit(
    job_file: str,
    out: str | None,
    resume: bool,
    overwrite: bool,
    local: int | None,
    task_modules: tuple[str, ...],
    wait: float,
    as_json: bool,
    quiet: bool,
    dry_run: bool,
    max_value_bytes: int | None,
    direct: bool | None,
    **kw: Any,
) -> int:
    """Run a job file on the cluster and write its results file."""
    from pyrocluster.local import start_local

    settings = with_direct(with_value_cap(settings_from(kw), max_value_bytes), direct)
    check_task_files(task_modules, local)
    if local and click.get_current_context().get_parameter_source("ns") is ParameterSource.COMMANDLINE:
        raise ConfigError("--ns and --local: --local runs the job on a private cluster; choose one")
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite: choose one")
    # The --local processes come up while this one imports, loads and checks the job;
    # submit_job stops them whatever happens.
    started = start_local(local, list(task_modules), settings) if local else None
    try:
        from pyrocluster import config
        from pyrocluster.jobs.submit import SubmitOptions, run_plain, submit_job

        config.apply(settings)  # before the first proxy: TLS needs Pyro5 set up
    except BaseException:
        if started is not None:
            started.close()
        raise
    options = SubmitOptions(
        job_file=job_file,
        out=out,
        resume=resume,
        overwrite=overwrite,
        local=local,
        task_modules=list(task_modules),
        wait_s=wait,
        dry_run=dry_run,
    )
    stop = threading.Event()
    cancel_on_signals(stop)
    progress = not (quiet or as_json) and render.out.is_terminal
    show = render.run_with_progress if progress else run_plain
    summary = submit_job(settings, options, stop, show, started)
    if dry_run:
        render.line(
            f"job {summary.name} is valid: {summary.total} task(s); live workers offer every task and "
            f"service it needs; it would write {summary.output}; nothing was run"
        )
        return EXIT_OK
    if as_json:
        render.print_json(summary.as_json())
    elif not quiet or summary.failures:  # --quiet: silent on success, the failures still show
        render.out.print(render.job_summary(summary.as_json(), summary.failures, table_too=not quiet))
    if summary.interrupted:
        render.error(f"cancelled: results so far are in {summary.output}; finish with --resume")
    return summary.exit_code


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--watch",
    is_flag=False,
    flag_value=2.0,
    type=float,
    default=None,
    metavar="[SECONDS]",
    help="Refresh in place every SECONDS (default 2).",
)
@click.option(
    "--jobs",
    "which_jobs",
    type=click.Choice(["recent", "running", "all"]),
    default="recent",
    show_default=True,
    help="Jobs listed: running ones and the latest finished run per job name; running only; every run.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Most finished jobs listed (0: all). Running and lost jobs are always listed.",
)
@shared_options
@command
def status(as_json: bool, watch: float | None, which_jobs: str, limit: int, **kw: Any) -> int:
    """Show the name server, the workers and the jobs (running, lost, and recently finished)."""
    from pyrocluster import config
    from pyrocluster.coordinator.status import cluster_status, unreachable_status

    settings = settings_from(kw)
    config.apply(settings)

    def view(data: dict[str, Any]) -> Any:
        return render.status_view(data, jobs=which_jobs, limit=limit)

    def as_document(data: dict[str, Any]) -> dict[str, Any]:
        """JSON keeps every job (scripts group as they like) except with ``--jobs running``."""
        if which_jobs == "running":
            data["jobs"] = [j for j in data["jobs"] if j.get("state") in ACTIVE]
        return data

    if watch is None:
        try:
            data = cluster_status(settings)
        except ClusterUnreachable as exc:
            if as_json:  # reachable (it answered) but refused us, or not reachable; and why
                render.print_json(unreachable_status(settings, exc))
            raise
        if as_json:
            render.print_json(as_document(data))
        else:
            render.out.print(view(data))
        return EXIT_OK
    # Ctrl-C (SIGINT) is how a watch ends, even when started with SIGINT ignored, as a shell
    # without job control starts a background command; it ends quietly: no error to report.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        _watch(settings, watch, as_json, as_document, view)
    return EXIT_OK


def _watch(settings: Any, every_s: float, as_json: bool, as_document: Any, view: Any) -> None:
    """Refresh ``status`` every ``every_s`` until interrupted: JSON Lines, or a table in place."""
    from pyrocluster.coordinator.status import cluster_status, unreachable_status

    if as_json:  # one JSON document per refresh, one per line (JSON Lines)
        while True:
            try:
                data = cluster_status(settings)
            except ClusterUnreachable as exc:
                data = unreachable_status(settings, exc)
            render.print_json(as_document(data))
            time.sleep(max(0.2, every_s))
    from rich.live import Live

    with Live(view(unreachable_status(settings)), console=render.out, auto_refresh=False) as live:
        while True:
            try:
                shown = view(cluster_status(settings))
            except ClusterUnreachable as exc:
                shown = view(unreachable_status(settings, exc))
            live.update(shown, refresh=True)
            time.sleep(max(0.2, every_s))
