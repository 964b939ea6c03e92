"""One exception root for pyrocluster; none of these crosses the wire (replies carry plain dicts)."""

from __future__ import annotations

import builtins
from typing import Any, TypeVar

E = TypeVar("E", bound=Exception)


class PyroClusterError(Exception):
    """Root of every pyrocluster error."""


class ConfigError(PyroClusterError):
    """A bad setting or command-line value (exit code 2)."""


class ClusterUnreachable(PyroClusterError):
    """The name server or every worker could not be reached, or refused us (exit code 3)."""


class AuthenticationError(ClusterUnreachable):
    """A handshake was refused: wrong or missing cluster secret, or a server that cannot prove it."""


class CredentialLapsed(AuthenticationError):
    """A worker refused our token as expired or revoked during the work (exit code 3)."""


class RoleRefused(PyroClusterError):
    """The credential's role does not allow the action; nothing happened (exit code 77)."""


class WorkerUnavailable(PyroClusterError):
    """A call ran out of attempts, or found no live worker offering its service within ``wait``.

    ``cause`` is the error its last attempt reported (``{"type", "message"}``: a crawl page's
    site that refused the connection or timed out), or None (a worker lost, none found).
    """

    cause: dict[str, str] | None = None


class TaskTimeout(PyroClusterError, TimeoutError):
    """A call's last attempt overran its timeout on the worker (error type ``TaskTimeout``)."""


class ResultsUnwritable(PyroClusterError):
    """The results file could not be written (disk full, permissions): the job stopped (exit code 74).

    Every line written before stays valid; ``--resume`` finishes the job.
    """


class TaskFailed(PyroClusterError):
    """The task itself raised on the worker; carries the remote type, message and traceback.

    Raised as :func:`remote_error` makes it: also an instance of the remote exception's class when
    that is a built-in exception or one registered with :func:`register_error`.
    """

    def __init__(self, type: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.traceback = traceback

    def __str__(self) -> str:
        text = f"{self.type}: {self.message}"
        return f"{text}\n\nremote traceback:\n{self.traceback.rstrip()}" if self.traceback else text

    def as_dict(self) -> dict[str, str]:
        """The error as the results file records it."""
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled and copied as made (the combined classes have no importable name)."""
        return (remote_error, (self.type, self.message, self.traceback), _state(self))


_REMOTE_TYPES: dict[str, type[Exception]] = {
    name: cls
    for name, cls in vars(builtins).items()
    if isinstance(cls, type) and issubclass(cls, Exception) and not name.startswith(("Stop", "_"))
}
"""Exception classes a remote error can also be an instance of, by the name that travels (not the
Stop*Iteration ones, which would end a generator that reads a result)."""
_BOTH: dict[type[Exception], type[TaskFailed]] = {}
_GROUP: Any = getattr(builtins, "BaseExceptionGroup", ())
"""Exception groups (Python 3.11 on): made with a message and a list of exceptions."""


def register_error(cls: type[E]) -> type[E]:
    """Make a task's own exception class catchable on the caller's side (usable as a decorator).

    The worker sends only the class name, so the name must be unique among registered classes.
    """
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        raise TypeError(f"register_error takes an exception class, not {cls!r}")
    _REMOTE_TYPES[cls.__name__] = cls
    return cls


def remote_error(type_name: str, message: str, traceback: str = "") -> TaskFailed:
    """TaskFailed for a task's remote error; also an instance of the remote class when known."""
    remote = _REMOTE_TYPES.get(type_name)
    if remote is None:
        return TaskFailed(type_name, message, traceback)
    both = _BOTH.get(remote)
    if both is None:
        both = _BOTH[remote] = _combined(remote, type_name)
    try:
        return both(type_name, message, traceback)
    except Exception:  # a registered class whose own __new__ refuses TaskFailed's arguments
        return TaskFailed(type_name, message, traceback)


def _combined(remote: type[Exception], type_name: str) -> type[TaskFailed]:
    """A class that is both TaskFailed and ``remote``, made with TaskFailed's arguments alone: the
    remote class's own ``__init__`` is not called (UnicodeDecodeError's takes five arguments),
    and an exception group is made holding the plain TaskFailed as its one exception."""
    members: dict[str, Any] = {"__module__": __name__, "__init__": _init_as_task_failed}
    if issubclass(remote, _GROUP):
        members["__new__"] = _new_group
    try:
        return type(f"TaskFailed[{type_name}]", (TaskFailed, remote), members)
    except TypeError:  # a class whose instance layout cannot be combined with ours
        return TaskFailed


def _init_as_task_failed(self: TaskFailed, type: str, message: str, traceback: str = "") -> None:
    Exception.__init__(self, f"{type}: {message}")
    self.type = type
    if not isinstance(self, _GROUP):  # a group's message is its own, set by __new__
        self.message = message
    self.traceback = traceback


def _new_group(cls: type[Any], type: str, message: str, traceback: str = "") -> Any:
    return _GROUP.__new__(cls, message, [TaskFailed(type, message, traceback)])


def error_record(exc: BaseException) -> dict[str, str]:
    """An exception as the results file records it: type, message, traceback."""
    if isinstance(exc, TaskFailed):
        return exc.as_dict()
    return {"type": type(exc).__name__, "message": str(exc), "traceback": ""}


class JobFileError(PyroClusterError):
    """A job file that cannot be run: names the file, the place and what is wrong (exit code 2)."""

    def __init__(self, path: str, where: str, message: str) -> None:
        self.path = path
        self.where = where
        self.message = message
        place = f"{path}: {where}: " if where else f"{path}: "
        super().__init__(place + message)
        self.problems: list[JobFileError] = [self]

    @classmethod
    def several(cls, problems: list[JobFileError]) -> JobFileError:
        """One error for several problems of a file, one line each (the first gives its fields)."""
        first = problems[0]
        combined = cls(first.path, first.where, first.message)
        combined.args = ("\n".join(str(p) for p in problems),)
        combined.problems = list(problems)
        return combined


def _state(exc: BaseException) -> dict[str, Any]:
    """The attributes set on ``exc`` after it was made (``__notes__`` and the like), for pickling."""
    return {k: v for k, v in vars(exc).items() if k not in ("type", "message", "traceback")}


class UpstreamFailed(PyroClusterError):
    """A call never ran because a future passed to it as an argument failed or was cancelled.

    ``upstream`` names that call (its task name); ``cause`` is its error.
    """

    def __init__(self, upstream: str, cause: BaseException) -> None:
        if isinstance(cause, TaskFailed):
            reason = f"{cause.type}: {cause.message}"
        else:
            reason = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        super().__init__(f"upstream call {upstream!r} failed: {reason}")
        self.upstream = upstream
        self.cause = cause

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled and copied as made."""
        return (UpstreamFailed, (self.upstream, self.cause), _state(self))
