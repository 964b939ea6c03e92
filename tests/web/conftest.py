"""Fixtures shared by the dashboard's browser tests."""

from tests.web.test_browser import browser  # noqa: F401 (the real-browser fixture, for every test here)
