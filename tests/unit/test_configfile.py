"""Where each key of a config file is (for errors naming the line), and the schema's file keys."""

from __future__ import annotations

import click

from pyrocluster.cli import main
from pyrocluster.cli.configfile import file_keys, key_lines


def test_key_lines_follow_tables_dotted_and_quoted_keys() -> None:
    text = (
        'ns = "a:1"\nworker.pool = "thread"\n# a comment\n[worker]\n  concurrency = 4\n"tags" = "x"\n\n'
        "[ submit ]\nwait=2\n"
    )
    lines = key_lines(text)
    assert lines[("", "ns")] == 1
    assert lines[("worker", "pool")] == 2  # a dotted key at the top names its table itself
    assert lines[("worker", "")] == 4
    assert lines[("worker", "concurrency")] == 5
    assert lines[("worker", "tags")] == 6
    assert lines[("submit", "")] == 8 and lines[("submit", "wait")] == 9


def test_file_keys_are_the_long_options_with_underscores() -> None:
    worker = main.get_command(click.Context(main), "worker")  # commands load when asked for
    assert worker is not None
    keys = file_keys(worker)
    assert {"drain_timeout", "tasks", "secret_file", "health_port", "log_format"} <= keys.keys()
    assert keys["tasks"].name == "task_modules"  # the key is the flag's name, not the parameter's
    assert "config" not in keys and "help" not in keys
