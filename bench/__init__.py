"""pyrocluster's benchmark suite: ``python -m bench [--quick] [--json OUT] [--markdown BENCHMARKS.md]``.

Each workload runs through pyrocluster and through its baselines in one process and one run,
so every ratio compares numbers taken on the same machine at the same time.
"""
