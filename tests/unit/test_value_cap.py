"""max_value_bytes: sizes as users write them, the bounds, and the message cap they set."""

from __future__ import annotations

import pytest

from pyrocluster.config import Settings, check_value_cap, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [("8388608", 8388608), ("300MiB", 300 * 2**20), ("1GiB", 2**30), ("2 gb", 2 * 10**9), ("64KB", 64_000)],
)
def test_sizes_take_a_whole_number_and_an_optional_unit(text, size):
    assert parse_size(text, "--max-value-bytes") == size


@pytest.mark.parametrize("text", ["", "1.5GiB", "12XB", "-3", "MiB"])
def test_a_malformed_size_is_one_line_naming_the_option(text):
    with pytest.raises(ValueError, match=r"^--max-value-bytes=.*expected a size in bytes"):
        parse_size(text, "--max-value-bytes")


def test_the_cap_is_bounded_and_sizes_the_message_cap(monkeypatch):
    with pytest.raises(ValueError, match="from 1024 to 2147483648"):
        check_value_cap(3 * 2**30)
    monkeypatch.setenv("PYROCLUSTER_MAX_VALUE_BYTES", "8MiB")
    settings = Settings.from_sources()
    assert settings.max_value_bytes == 8 * 2**20
    assert settings.child_env()["PYROCLUSTER_MAX_VALUE_BYTES"] == str(8 * 2**20)
    # a batch of small values plus one big value, base64 under serpent, fits one Pyro5 message
    assert settings.wire_cap_bytes >= settings.max_message_bytes + 8 * 2**20 * 4 // 3
    assert Settings.from_sources(max_value_bytes=4096).max_value_bytes == 4096
