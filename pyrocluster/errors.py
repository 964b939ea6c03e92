"""One exception root for pyrocluster; none of these crosses the wire (replies carry plain dicts)."""

from __future__ import annotations


class PyroClusterError(Exception):
    """Root of every pyrocluster error."""


class ConfigError(PyroClusterError):
    """A bad setting or command-line value (exit code 2)."""


class ClusterUnreachable(PyroClusterError):
    """The name server or every worker could not be reached, or refused us (exit code 3)."""


class AuthenticationError(ClusterUnreachable):
    """A handshake was refused: wrong or missing cluster secret, or a server that cannot prove it."""


class RoleRefused(PyroClusterError):
    """The credential's role does not allow the action; nothing happened (exit code 77)."""


class WorkerUnavailable(PyroClusterError):
    """A call ran out of attempts, or found no live worker offering its service within ``wait``."""


class TaskTimeout(PyroClusterError, TimeoutError):
    """A call's last attempt overran its timeout on the worker (error type ``TaskTimeout``)."""


class ResultsUnwritable(PyroClusterError):
    """The results file could not be written (disk full, permissions): the job stopped (exit code 74).

    Every line written before stays valid; ``--resume`` finishes the job.
    """


class TaskFailed(PyroClusterError):
    """The task itself raised on the worker; carries the remote type, message and traceback."""

    def __init__(self, type: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.traceback = traceback

    def as_dict(self) -> dict[str, str]:
        """The error as the results file records it."""
        return {"type": self.type, "message": self.message, "traceback": self.traceback}


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


class UpstreamFailed(PyroClusterError):
    """A call never ran because a future passed to it as an argument failed or was cancelled.

    ``upstream`` names that call (its task name); ``cause`` is its error.
    """

    def __init__(self, upstream: str, cause: BaseException) -> None:
        reason = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        super().__init__(f"upstream call {upstream!r} failed: {reason}")
        self.upstream = upstream
        self.cause = cause
