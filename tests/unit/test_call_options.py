"""Call options a worker would refuse are refused when set, naming the option (no cluster needed)."""

from __future__ import annotations

import math

import pytest

from pyrocluster import Cluster
from pyrocluster.coordinator.calloptions import CallOptions
from pyrocluster.local import LocalCluster


def changed(**given: object) -> CallOptions:
    options = {"tags": None, "timeout": None, "retries": None, "priority": None, "retry_on_error": None}
    return CallOptions().changed(**{**options, "resources": None, **given})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "error", "words"),
    [
        ({"tags": "fast"}, TypeError, "tags=['fast']"),
        ({"tags": ["a", ""]}, TypeError, "non-empty strings"),
        ({"tags": [1]}, TypeError, "non-empty strings"),
        ({"timeout": 0}, ValueError, "timeout must be in (0,"),
        ({"timeout": -1.5}, ValueError, "timeout must be in (0,"),
        ({"timeout": math.inf}, ValueError, "timeout must be in (0,"),
        ({"timeout": math.nan}, TypeError, "timeout must be a number"),
        ({"timeout": "5"}, TypeError, "timeout must be a number"),
        ({"timeout": True}, TypeError, "timeout must be a number"),
        ({"retries": -1}, ValueError, "retries must be 0 or more"),
        ({"retries": 1.5}, TypeError, "retries must be an integer"),
        ({"priority": "high"}, TypeError, "priority must be an integer"),
        ({"priority": 2**40}, ValueError, "priority must be within"),
        ({"retry_on_error": "yes"}, TypeError, "retry_on_error must be True or False"),
        ({"resources": "gpu"}, TypeError, "resources must be a mapping of resource name to amount"),
        ({"resources": ["gpu"]}, TypeError, "resources must be a mapping of resource name to amount"),
    ],
)
def test_an_option_no_worker_would_take_is_refused_naming_it(given, error, words):
    with pytest.raises(error) as caught:
        changed(**given)
    assert words in str(caught.value)


def test_good_options_change_only_what_is_given():
    options = changed(tags=("gpu", "big"), timeout=2, retries=0, priority=-3)
    assert options == CallOptions(frozenset({"gpu", "big"}), 2.0, 0, -3, False, ())
    assert options.changed(None, None, None, None, True, None).retry_on_error is True
    assert options.changed(None, None, None, None, True, None).tags == {"gpu", "big"}


@pytest.mark.parametrize("workers", [-1, 1.5, True])
def test_a_local_cluster_of_a_negative_or_odd_number_of_workers_is_refused_before_starting(workers):
    with pytest.raises(ValueError, match="workers must be an integer of 0 or more"):
        LocalCluster(workers)  # type: ignore[arg-type]


def test_worker_args_given_as_one_string_are_refused_before_starting():
    """Not split into characters (``Got unexpected extra arguments (- - c o n c ...)``)."""
    with pytest.raises(
        TypeError, match=r"worker_args must be a list of arguments, e.g. \['--concurrency', '1'\]"
    ):
        Cluster.local(workers=1, worker_args="--concurrency 1")  # type: ignore[arg-type]
