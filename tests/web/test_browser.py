"""The dashboard page in a real browser (Debian's chromium + chromedriver, driven by Selenium)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import start_submit, wait_for
from tests.web.helpers import start_dashboard

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("PYROCLUSTER_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))
"""Where the screenshot is saved (CI keeps this directory)."""

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,1000"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def text_of(driver, css: str) -> str:
    """The visible text of every element ``css`` matches, read in one step of the page: the page
    redraws every second, and reading elements one call at a time could meet a redraw (then "")."""
    script = (
        "return [...document.querySelectorAll(arguments[0])]"
        ".map((e) => e.innerText ?? e.textContent).join(' ');"  # SVG elements have no innerText
    )
    return str(driver.execute_script(script, css))


def click_first(driver, css: str) -> bool:
    """Click the first element ``css`` matches, as a user does; False when there is none yet or a
    redraw replaced it between finding and clicking (the page redraws every second)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        driver.find_elements("css selector", css)[0].click()
    except (IndexError, StaleElementReferenceException):
        return False
    return True


@pytest.mark.slow
def test_page_shows_workers_progress_failures_and_a_killed_worker(
    tmp_path, nameserver, worker_factory, processes, browser
):
    for name in ("alpha", "beta"):
        worker_factory(1, "--name", name, "--services", "compute", "--pool", "thread", "--concurrency", "2")
    beta = processes.started[-1]
    _, url = start_dashboard(processes, nameserver)
    browser.get(url)
    wait_for(lambda: "alpha" in text_of(browser, "#workers") and "beta" in text_of(browser, "#workers"), 10,
             what="both workers on the page")  # fmt: skip
    browser.execute_script("window.__noReload = 'still here';")
    job = tmp_path / "slow.yaml"
    job.write_text(
        "name: slow\ntasks:\n  - id: broken\n    call: fail\n    args: [boom in the dashboard test]\n"
        "  - id: naps\n    call: sleep\n    map: " + str([0.05] * 300) + "\n"
    )
    submit = start_submit(job, nameserver, tmp_path, "--quiet")
    try:
        first = wait_for(lambda: text_of(browser, "#jobs .progress-text"), 15, what="the job on the page")
        wait_for(lambda: text_of(browser, "#jobs .progress-text") not in ("", first), 10,
                 what="progress moving without reload")  # fmt: skip
        wait_for(lambda: click_first(browser, "#jobs details summary"), 10, what="the failed task listed")
        traceback = wait_for(lambda: text_of(browser, "#jobs details[open] pre.traceback"), 5,
                             what="the traceback expanded")  # fmt: skip
        assert "RuntimeError: boom in the dashboard test" in traceback
        assert "Traceback (most recent call last)" in traceback
        time.sleep(1.5)  # one poll later the traceback is still open (redraws keep it)
        assert "boom in the dashboard test" in text_of(browser, "#jobs details[open] pre.traceback")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        assert browser.execute_script("return window.__noReload") == "still here"
        submit.wait(timeout=60)
    finally:
        if submit.poll() is None:
            submit.kill()
        submit.communicate(timeout=10)

    beta.signal(signal.SIGKILL)
    killed = time.monotonic()

    def beta_state() -> str:
        return text_of(browser, '#workers tr[data-worker="beta"] td:nth-child(3)')

    wait_for(lambda: beta_state() == "unreachable", 5, interval_s=0.05, what="the killed worker unreachable")
    assert time.monotonic() - killed < 5
    assert "ready" in text_of(browser, '#workers tr[data-worker="alpha"]')
    assert browser.execute_script("return window.__noReload") == "still here"


def test_finished_runs_of_one_job_are_one_row_with_their_count(nameserver, processes, browser):
    from pyrocluster.config import Settings
    from pyrocluster.nameserver import finished, registry

    ns = registry.connect(Settings().with_ns(nameserver))
    try:
        for k in range(12):  # what a schedule firing every second leaves behind
            entry = {"name": "tick", "state": "finished", "done": 2, "total": 2, "failed": 0, "rate": 9.0}
            finished.register_finished(ns, f"tick@host-1-{1000 + k}", entry, [], now=time.time() - 12 + k)
        report = {"name": "report", "state": "cancelled", "done": 0, "total": 3, "failed": 0, "rate": 0.0}
        finished.register_finished(ns, "report@host-1-5", report, [])
    finally:
        ns._pyroRelease()
    _, url = start_dashboard(processes, nameserver)
    browser.get(url)
    wait_for(lambda: "12 runs" in text_of(browser, "#jobs"), 15, what="the grouped runs on the page")
    assert len(browser.find_elements("css selector", "#jobs .job")) == 2
    text = text_of(browser, "#jobs")
    assert "12 runs (12 finished)" in text and "report" in text and "Jobs (2)" in text
