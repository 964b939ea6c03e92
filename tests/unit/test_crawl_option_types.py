"""The Python API's crawl options are checked for type before anything runs (as a job file's are)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrocluster.crawl.optiontypes import check_types


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"max_pages": "x"}, "max_pages must be an int"),
        ({"max_depth": "2"}, "max_depth must be an int"),
        ({"max_pages": True}, "max_pages must be an int"),
        ({"per_host_rate": "fast"}, "per_host_rate must be a number of seconds"),
        ({"robots": "no"}, "robots must be True or False"),
        ({"allow": 5}, "allow must be a list of strings"),
        ({"allow": "127.0.0.1"}, "allow must be a list of strings"),
        ({"extract": ["title"]}, "extract must be a dict of strings"),
        ({"headers": {"X-A": 1}}, "headers must be a dict of strings"),
        ({"state": 3}, "state must be a file name"),
    ],
)
def test_an_option_of_the_wrong_type_is_a_type_error_naming_it(options, named):
    with pytest.raises(TypeError, match=f"crawl option {named}"):
        check_types(options)


def test_options_of_the_right_types_pass():
    check_types(
        {
            "allow": ("127.0.0.1:8080",),
            "max_pages": 10,
            "max_depth": 0,
            "per_host_rate": 0.5,
            "timeout": 5,
            "robots": False,
            "extract": {"h1": "h1"},
            "headers": {"X-A": "b"},
            "tags": {"fast"},
            "retries": None,
            "state": Path("crawl.sqlite"),
        }
    )
