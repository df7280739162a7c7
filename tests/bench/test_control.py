"""The overload bench's control-plane probe: its percentiles and how many answers a level still waits for."""

from __future__ import annotations

import pytest
from fanout_bench.load.command import build_parser
from fanout_bench.load.control import answers_missing, percentiles


def test_the_p99_of_a_hundred_answers_is_the_99th_not_the_slowest() -> None:
    times = [float(value) for value in range(1, 101)]  # 1..100 ms, in any order
    assert percentiles(list(reversed(times))) == {"p50": 50.0, "p99": 99.0, "max": 100.0}
    # Two hundred answers: the p99 is the 198th; the two slowest lie above it.
    assert percentiles([float(value) for value in range(1, 201)])["p99"] == 198.0


def test_of_fewer_than_a_hundred_answers_the_p99_is_the_slowest() -> None:
    assert percentiles([3.0, 1.0, 700.0, 2.0]) == {"p50": 2.0, "p99": 700.0, "max": 700.0}
    assert percentiles([5.0]) == {"p50": 5.0, "p99": 5.0, "max": 5.0}
    assert percentiles([]) == {"p50": None, "p99": None, "max": None}


def test_a_level_waits_only_for_the_requests_short_of_the_answers_wanted() -> None:
    assert answers_missing({"ping": 100, "info": 99, "get_status": 40}, 100) == {"info": 1, "get_status": 60}
    assert answers_missing({"ping": 101, "info": 100, "get_status": 100}, 100) == {}
    assert answers_missing({}, 3) == {"ping": 3, "info": 3, "get_status": 3}  # none answered yet
    assert answers_missing({"ping": 0, "info": 0, "get_status": 0}, 0) == {}  # 0: the window alone


def test_control_samples_default_to_a_hundred_and_refuse_what_is_not_a_count() -> None:
    assert build_parser().parse_args(["--overload"]).control_samples == 100
    assert build_parser().parse_args(["--overload", "--control-samples", "300"]).control_samples == 300
    assert build_parser().parse_args(["--overload", "--control-samples", "0"]).control_samples == 0
    for bad in ("-1", "many", "", "2.5"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--overload", "--control-samples", bad])
