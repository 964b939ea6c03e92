"""Which jobs a status display lists: grouping, filters, limits (pure)."""

from __future__ import annotations

from pyrocluster.listed_jobs import list_jobs, runs_text


def job(name: str, state: str, ended: float = 0.0, n: int = 0) -> dict:
    return {"id": f"{name}@h-1-{n}", "name": name, "state": state, "ended": ended, "done": 1, "total": 1}


JOBS = [
    job("long", "running", n=1),
    job("gone", "lost", n=2),
    *[job("tick", "finished", ended=100.0 + k, n=10 + k) for k in range(60)],
    job("tick", "cancelled", ended=50.0, n=9),
    job("report", "finished", ended=90.0, n=3),
]


def test_recent_lists_active_jobs_then_the_latest_run_of_each_name_with_its_runs():
    rows = list_jobs(JOBS)
    assert [r["name"] for r in rows] == ["long", "gone", "tick", "report"]
    assert rows[2]["id"] == "tick@h-1-69" and rows[2]["runs"] == {"finished": 60, "cancelled": 1}
    assert runs_text(rows[2]) == "61 (1 cancelled, 60 finished)" and runs_text(rows[3]) == "-"


def test_all_lists_every_run_newest_first_within_the_limit_and_says_how_many_more():
    rows = list_jobs(JOBS, "all", limit=5)
    assert [r.get("state") for r in rows[:2]] == ["running", "lost"]
    assert [r["id"] for r in rows[2:7]] == [f"tick@h-1-{69 - k}" for k in range(5)]
    assert rows[-1] == {"more": 57}
    assert len(list_jobs(JOBS, "all", limit=0)) == len(JOBS)


def test_running_lists_only_running_and_lost_jobs():
    assert [r["state"] for r in list_jobs(JOBS, "running")] == ["running", "lost"]
