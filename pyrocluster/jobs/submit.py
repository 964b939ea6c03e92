"""``pyrocluster submit``: load and check a job, find the cluster (or start one), run, summarise."""

from __future__ import annotations

import difflib
import errno
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyrocluster import logs
from pyrocluster.auth import own_peer
from pyrocluster.config import Settings
from pyrocluster.coordinator.cluster import Cluster
from pyrocluster.coordinator.preflight import Need, wait_for_workers
from pyrocluster.defaults import DEFAULT_WAIT_S
from pyrocluster.errors import ConfigError, CredentialLapsed, JobFileError, ResultsUnwritable
from pyrocluster.gc_thresholds import fewer_collections
from pyrocluster.jobs import runfile
from pyrocluster.jobs.announce import Announcement
from pyrocluster.jobs.cluster_ahead import give_up, reach_ahead
from pyrocluster.jobs.items import asked, called_tasks, count_task_items, required_tags
from pyrocluster.jobs.jobids import JobIds
from pyrocluster.jobs.runner import JobRunner, JobSummary
from pyrocluster.jobs.spec import MAX_PROBLEMS, JobSpec, TaskSpec, load_job, secret_values
from pyrocluster.jobs.yamlread import line_of
from pyrocluster.local import LocalCluster, start_local
from pyrocluster.nameserver.registry import WorkerEntry
from pyrocluster.resources import full_ask, shortfall, unfit_reason
from pyrocluster.roles import audit, require_own
from pyrocluster.tokens import Role

if TYPE_CHECKING:
    from pyrocluster.crawl.run import CrawlRun


@dataclass
class SubmitOptions:
    """What ``submit`` was told besides the shared settings."""

    job_file: str
    out: str | None = None
    resume: bool = False
    overwrite: bool = False
    local: int | None = None
    task_modules: list[str] = field(default_factory=list)
    wait_s: float = 10.0
    dry_run: bool = False
    """Check the file and the cluster as for a run, and stop there."""


def needs_of(spec: JobSpec) -> set[Need]:
    """The services (with tags) the job needs some live worker to offer."""
    needs: set[Need] = set()
    if spec.tasks:
        needs.add(("compute", frozenset()))
        needs.update(("compute", frozenset(tags)) for tags in required_tags(spec))
    if spec.crawl is not None:
        needs.add(("crawl", frozenset()))
    return needs


class _JobText:
    """The job file's text, read only when a problem needs its line (a big ``map`` is long)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._text: str | None = None

    def line_of(self, loc: tuple[Any, ...]) -> int | None:
        """The 1-based line of ``loc`` in the file, or None (unreadable, or not found)."""
        if self._text is None:
            try:
                self._text = Path(self._path).read_text(encoding="utf-8")
            except OSError:
                self._text = ""
        return line_of(self._text, loc) if self._text else None


def check_task_names(spec: JobSpec, offered: set[str]) -> None:
    """JobFileError for every task (or callback) whose ``call`` no live worker offers, each with the
    closest offered name and its line."""
    problems: list[JobFileError] = []
    text = _JobText(spec.path)
    for where, name in called_tasks(spec):
        if name in offered:
            continue
        close = difflib.get_close_matches(name, sorted(offered), n=1)
        known = ", ".join(sorted(offered)) or "none"
        hint = f"did you mean {close[0]!r}?" if close else f"the workers offer: {known}"
        loc = tuple(int(p) if p.isdigit() else p for p in where.replace("[", ".").replace("]", "").split("."))
        line = text.line_of(loc)
        place = f"{where} (line {line})" if line is not None else where
        problems.append(
            JobFileError(spec.path, place, f"unknown task {name!r}: no live worker offers it ({hint})")
        )
    if problems:
        raise JobFileError.several(problems[:MAX_PROBLEMS])


Demand = tuple[str, frozenset[str], tuple[tuple[str, float], ...]]
"""A task name, the tags its worker must carry, and its resource ask: what tasks share."""


def _demands(spec: JobSpec) -> dict[Demand, list[tuple[int, TaskSpec]]]:
    """The job's distinct demands, each with its tasks ``(index, task)`` in order."""
    out: dict[Demand, list[tuple[int, TaskSpec]]] = {}
    for j, task in enumerate(spec.tasks):
        tags = frozenset(task.tags if task.tags is not None else spec.defaults.tags)
        out.setdefault((task.call, tags, asked(task, spec.defaults)), []).append((j, task))
    return out


def _unfit(
    demands: dict[Demand, list[tuple[int, TaskSpec]]], entries: list[WorkerEntry]
) -> Iterator[tuple[int, TaskSpec, str]]:
    """``(index, task, reason)`` of each task whose resource ask none of ``entries`` (offering it,
    with its tags) could ever fit."""
    for (call, tags, raw_ask), tasks in demands.items():
        ask, totals = full_ask(dict(raw_ask)), _totals(entries, call, tags)
        if not totals or shortfall(ask, totals) is None:
            continue
        for j, task in tasks:
            yield j, task, unfit_reason(task.id, ask, totals) or ""


def _totals(entries: list[WorkerEntry], call: str, tags: frozenset[str]) -> list[dict[str, float]]:
    """The resources of the workers among ``entries`` that offer task ``call`` and carry ``tags``."""
    return [dict(e.resources) for e in entries if call in e.tasks and tags <= e.tags]


def checks_pass(spec: JobSpec) -> Callable[[list[WorkerEntry]], bool]:
    """Whether the workers that answered so far already pass every check the job makes: each
    called task offered by one, each demand met by one that offers the task, carries its tags and
    fits its ask. The look-up stops waiting for other workers' answers then; while a demand is
    met by none of them, it waits for every answer, and the checks decide on those as before."""
    names = {name for _, name in called_tasks(spec)}
    asks = [(call, tags, full_ask(dict(raw_ask))) for call, tags, raw_ask in _demands(spec)]

    def enough(live: list[WorkerEntry]) -> bool:
        if not names <= {name for e in live for name in e.tasks}:
            return False
        for call, tags, ask in asks:
            totals = _totals(live, call, tags)
            if not totals or shortfall(ask, totals) is not None:
                return False
        return True

    return enough


def check_resources(spec: JobSpec, entries: list[WorkerEntry]) -> None:
    """JobFileError for every task whose resource ask no live worker (offering it, with its tags)
    could ever fit, naming the task, the resource and the largest amount any such worker has."""
    text = _JobText(spec.path)
    problems: list[JobFileError] = []
    for j, task, reason in sorted(_unfit(_demands(spec), entries), key=lambda problem: problem[0]):
        own = task.resources is not None
        loc: tuple[Any, ...] = ("tasks", j, "resources") if own else ("defaults", "resources")
        line = text.line_of(loc)
        where = f"tasks[{j}].resources" if own else "defaults.resources"
        place = f"{where} (line {line})" if line is not None else where
        problems.append(JobFileError(spec.path, place, reason))
    if problems:
        raise JobFileError.several(problems[:MAX_PROBLEMS])


def _prepare(settings: Settings, options: SubmitOptions) -> tuple[JobSpec, Path]:
    """Load and check the job file, the submitter's role and the results file's place."""
    spec = load_job(options.job_file)
    logs.set_job(spec.name)
    peer = own_peer(settings)
    require_own(peer, Role.SUBMITTER, "submit jobs")
    if not options.dry_run and (settings.secret is not None or settings.token is not None):
        audit(peer, "submit", job=spec.name)  # without a credential there is nobody to name
    output = Path(options.out or spec.output)
    if "\0" in str(output):
        raise ConfigError(f"the results file {str(output)!r} has a NUL character in its name")
    try:
        if output.is_dir():
            raise ConfigError(f"the results file {output} is a directory: give a file's name (--out)")
        if output.exists() and output.samefile(spec.path):
            raise ConfigError(f"the results file {output} is the job file itself: give another --out")
        if options.dry_run:
            _writable(output)
        else:
            try:
                output.parent.mkdir(parents=True, exist_ok=True)  # `output: runs/today/x.jsonl` just works
            except OSError as exc:
                why = exc.strerror or exc
                raise ConfigError(f"cannot create the folder of the results file {output}: {why}") from None
        ids = JobIds(spec) if options.resume else None
        runfile.check_start(output, spec.name, options.resume, options.overwrite, ids)
    except OSError as exc:  # a name too long, a folder that is a file, ...
        raise ConfigError(f"cannot write the results file {output}: {exc.strerror or exc}") from None
    return spec, output


def _writable(output: Path) -> None:
    """For a dry run: OSError when ``output`` could not be written, creating and changing nothing
    (an existing file is opened to append and closed; else its nearest existing folder is checked)."""
    if output.exists():
        with output.open("ab"):
            return
    folder = output.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, f"{folder} is not a folder this user may write in")


def run_plain(run: Callable[[], JobSummary], snapshot: Callable[[], dict[str, Any]]) -> JobSummary:
    """Run without a progress display."""
    return run()


def submit_job(
    settings: Settings,
    options: SubmitOptions,
    stop: threading.Event,
    show: Callable[[Callable[[], JobSummary], Callable[[], dict[str, Any]]], JobSummary] = run_plain,
    local: LocalCluster | None = None,
) -> JobSummary:
    """Run the job end to end; raises JobFileError/ConfigError (exit 2), ClusterUnreachable (exit 3)
    or ResultsUnwritable (exit 74, after closing what was written).

    ``show(run, snapshot)`` runs the job, displaying progress from ``snapshot`` as it likes.
    ``local`` is the ``--local`` cluster if the caller started it already (``local.start_local``;
    it is started here otherwise): the job file is loaded and checked while it comes up, and it
    is stopped when the job ends or fails, however early.
    """
    if local is None and options.local:
        local = start_local(options.local, options.task_modules, settings)
    try:
        with fewer_collections():
            return _submit(settings, options, stop, show, local)
    finally:
        if local is not None:
            local.close()


def _submit(
    settings: Settings,
    options: SubmitOptions,
    stop: threading.Event,
    show: Callable[[Callable[[], JobSummary], Callable[[], dict[str, Any]]], JobSummary],
    local: LocalCluster | None,
) -> JobSummary:
    # Without --local the cluster is there already: it is reached while the file loads, and what
    # that met (an unreachable name server too) is read after the job's own checks.
    wait = max(options.wait_s, DEFAULT_WAIT_S)
    reached = None if local is not None else reach_ahead(settings, wait, not options.dry_run)
    try:
        spec, output = _prepare(settings, options)
    except BaseException:
        if reached is not None:
            give_up(reached)
        raise
    if local is not None:
        local.wait_ready()
        settings = settings.with_ns(local.address)
    cluster: Cluster | None = None
    crawl: CrawlRun | None = None
    try:
        first, cluster = reached.result() if reached is not None else (None, None)
        entries = wait_for_workers(settings, needs_of(spec), options.wait_s, first, checks_pass(spec))
        if spec.tasks:
            check_task_names(spec, {name for e in entries for name in e.tasks})
            check_resources(spec, entries)
        if options.dry_run:
            return JobSummary(spec.name, count_task_items(spec), 0, 0, 0, 0, 0, 0.0, 0.0, str(output))
        if cluster is None:
            cluster = Cluster(settings=settings, wait=wait)
        if spec.crawl is not None:
            from pyrocluster.crawl.run import CrawlRun  # only a crawl job loads the frontier's libraries

            c = spec.crawl
            crawl = CrawlRun(
                cluster,
                c.seeds,
                allow=c.allow,
                max_pages=c.max_pages,
                max_depth=c.max_depth,
                per_host_rate=c.per_host_rate,
                robots=c.robots,
                retries=spec.defaults.retries,
                extract=c.extract or None,
                max_bytes=c.max_bytes,
                timeout=c.timeout,
                user_agent=c.user_agent,
                state=c.state,
                revisit=c.revisit,
                sitemaps=c.sitemaps,
                headers=secret_values(c.headers),
                cookies=secret_values(c.cookies),
            )
        runner = JobRunner(spec, cluster, output, options.resume, crawl)
        try:
            kept = runner.open()
            runfile.mark(output, spec.name, finished=False)
        except OSError as exc:
            raise ConfigError(f"cannot write the results file {output}: {exc.strerror or exc}") from None
        except ValueError as exc:  # --resume of a file whose lines are not results records
            why = f"cannot resume from {exc}: not a results file"
            raise ConfigError(f"{why} (give another --out, or --overwrite to replace it)") from None
        with Announcement(
            settings, spec.name, runner.snapshot, runner.recent_failures, on_cancel=stop.set
        ) as announcement:
            summary = show(lambda: runner.run(stop, kept), runner.snapshot)
            announcement.finish({**runner.snapshot(), "rate": summary.tasks_per_s}, summary.interrupted)
            announcement.leave()  # its name-server calls go on while the results file is synced
            runner.close()
        if summary.write_error:
            raise ResultsUnwritable(
                f"{summary.write_error}; the {summary.ok + summary.failed} outcomes written before are kept "
                "(finish with --resume)"
            )
        if summary.lapsed:
            raise CredentialLapsed(
                f"{summary.lapsed}; the {summary.ok + summary.failed} outcomes written before are kept "
                "(finish with --resume and a valid credential)"
            )
        if not summary.interrupted:
            runfile.mark(output, spec.name, finished=True)
        return summary
    finally:
        if crawl is not None:
            crawl.close()
        if cluster is not None:
            cluster.close()
