"""pyrocluster: a light Python compute and crawl cluster on Pyro5."""

from pyrocluster.errors import (
    AuthenticationError,
    ClusterUnreachable,
    ConfigError,
    PyroClusterError,
    TaskFailed,
    TaskTimeout,
    UpstreamFailed,
    WorkerUnavailable,
    register_error,
)
from pyrocluster.tasks import task

__all__ = [
    "AuthenticationError", "Cluster", "ClusterUnreachable", "ConfigError", "PyroClusterError", "TaskFailed",
    "TaskTimeout", "UpstreamFailed", "WorkerUnavailable", "load_result", "register_error", "task",
]  # fmt: skip
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # Cluster pulls in the coordinator; load it on first use so `import pyrocluster` in a
    # worker's task processes stays light.
    if name == "Cluster":
        from pyrocluster.coordinator.cluster import Cluster

        return Cluster
    if name == "load_result":
        from pyrocluster.jobs.values import load_result

        return load_result
    raise AttributeError(name)
