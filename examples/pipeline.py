"""The pipeline example with futures as arguments: `python examples/pipeline.py`.

Starts a private cluster (2 workers with the example tasks), fans out over the lines of a text,
fans in with futures passed straight into the next call, and prints the most common words.
"""

from __future__ import annotations

from pathlib import Path

from pyrocluster import Cluster

TEXT = "the quick brown fox\njumps over the lazy dog\nthe dog sleeps\nthe end"
TASKS = str(Path(__file__).with_name("pipeline_tasks.py"))


def main() -> None:
    """Run the pipeline and print its result."""
    with Cluster.local(workers=2, worker_args=["--tasks", TASKS]) as cluster:
        lines = cluster.submit("split_lines", TEXT).result()  # the fan-out needs the list itself
        counts = [cluster.submit("word_count", line) for line in lines]
        total = cluster.submit("merge_counts", *counts)  # waits for every count, receives the dicts
        top = cluster.submit("most_common", total, 3)  # waits for total: no thread is blocked meanwhile
        print(top.result(timeout=60))


if __name__ == "__main__":
    main()
