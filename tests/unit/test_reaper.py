"""The name server's rule for forgetting silent registrations (pure, the clock passed in)."""

from __future__ import annotations

from pyrocluster.nameserver.reaper import to_forget


def test_a_name_is_forgotten_only_after_staying_silent_for_the_whole_time():
    silent: dict[str, float] = {}
    assert to_forget(silent, {"worker:a": False, "worker:b": True}, now=0.0, forget_after_s=10) == []
    assert to_forget(silent, {"worker:a": False}, now=9.9, forget_after_s=10) == []
    assert to_forget(silent, {"worker:a": False}, now=10.0, forget_after_s=10) == ["worker:a"]


def test_an_answer_or_a_gone_registration_resets_the_count():
    silent: dict[str, float] = {}
    to_forget(silent, {"worker:a": False, "job:j": False}, now=0.0, forget_after_s=10)
    to_forget(silent, {"worker:a": True}, now=5.0, forget_after_s=10)  # answered; j unregistered
    assert silent == {}
    assert to_forget(silent, {"worker:a": False}, now=12.0, forget_after_s=10) == []
