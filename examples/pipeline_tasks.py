"""Tasks of the pipeline example: split a text, merge word counts, pick the most common words."""

from __future__ import annotations

from collections import Counter

from pyrocluster import task


@task
def split_lines(text: str) -> list[str]:
    """The non-empty lines of ``text``."""
    return [line for line in text.splitlines() if line.strip()]


@task
def merge_counts(*counts: dict[str, int] | list[dict[str, int]]) -> dict[str, int]:
    """Sum word counts given one by one (futures) or as one list (``{$result: ID}`` of a map)."""
    total: Counter[str] = Counter()
    for item in counts:
        for one in item if isinstance(item, list) else [item]:
            total.update(one)
    return dict(total)


@task
def most_common(counts: dict[str, int], n: int) -> list[list[object]]:
    """The ``n`` most common words with their counts, most common first (ties by word)."""
    return [[word, count] for word, count in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:n]]
