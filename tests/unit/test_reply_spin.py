"""How a lone call's thread awaits its reply (``coordinator/wire/replyspin.py``): the policy's
back-off after misses, the poll loop, and the setting that turns it off."""

from __future__ import annotations

import select
import socket

import pytest

from pyrocluster.config import Settings
from pyrocluster.coordinator.wire.replyspin import MAX_SKIP, ReplySpin, spin


def pattern(policy: ReplySpin, waits: int, caught: bool) -> list[str]:
    """Whether each of ``waits`` waits in turn spins, each spin ending ``caught`` or not."""
    seen = []
    for _ in range(waits):
        spins = bool(policy.window())
        seen.append("spin" if spins else "sleep")
        if spins:
            policy.caught(caught)
    return seen


def test_every_wait_spins_while_replies_are_caught() -> None:
    policy = ReplySpin(1e-4)
    assert pattern(policy, 5, caught=True) == ["spin"] * 5
    assert (policy.caught_replies, policy.missed_replies) == (5, 0)


def test_misses_in_a_row_double_the_run_of_waits_that_sleep_at_once() -> None:
    policy = ReplySpin(1e-4)
    assert pattern(policy, 8, caught=False) == [
        "spin", "sleep", "spin", "sleep", "sleep", "spin", "sleep", "sleep",
    ]  # fmt: skip
    assert (policy.caught_replies, policy.missed_replies) == (0, 3)


def test_the_run_of_sleeping_waits_is_capped_and_a_caught_reply_ends_it() -> None:
    policy = ReplySpin(1e-4)
    for _ in range(20):  # far past the cap
        while not policy.window():
            pass
        policy.caught(False)
    skipped = 0
    while not policy.window():
        skipped += 1
    assert skipped == MAX_SKIP
    policy.caught(True)
    assert policy.window() == 1e-4  # caught: the next wait spins again


def test_a_zero_window_never_spins() -> None:
    policy = ReplySpin(0.0)
    assert [policy.window() for _ in range(3)] == [0.0, 0.0, 0.0]


def test_spin_returns_as_soon_as_the_socket_is_readable_and_never_sleeps() -> None:
    a, b = socket.socketpair()
    with a, b:
        poller = select.poll()
        poller.register(a, select.POLLIN)
        timeouts: list[int] = []

        def poll(timeout: int) -> list[tuple[int, int]]:
            timeouts.append(timeout)
            if len(timeouts) == 3:
                b.send(b"x")
            return poller.poll(timeout)

        assert spin(poll, 5.0)
        assert timeouts == [0, 0, 0]  # polled without waiting, stopped at the reply


def test_spin_gives_up_after_its_window() -> None:
    calls = []
    assert not spin(lambda timeout: calls.append(timeout), 1e-4)
    assert calls and set(calls) == {0}


def test_the_window_comes_from_the_environment_and_a_bad_one_is_named(monkeypatch) -> None:
    monkeypatch.setenv("PYROCLUSTER_REPLY_SPIN_US", "0")
    assert Settings.from_sources().reply_spin_s == 0.0
    monkeypatch.setenv("PYROCLUSTER_REPLY_SPIN_US", "250")
    assert Settings.from_sources().reply_spin_s == pytest.approx(250e-6)
    monkeypatch.delenv("PYROCLUSTER_REPLY_SPIN_US")
    assert Settings.from_sources().reply_spin_s == pytest.approx(100e-6)
    for bad in ("-1", "1.5", "fast", "20000"):
        monkeypatch.setenv("PYROCLUSTER_REPLY_SPIN_US", bad)
        with pytest.raises(ValueError, match="PYROCLUSTER_REPLY_SPIN_US=.*whole number of microseconds"):
            Settings.from_sources()
