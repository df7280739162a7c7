"""The data plane's priority: the engine's receiver and workers take the nice value
asked for (``data_plane_nice``), seen in /proc as ps shows it; without the right to
lower it, they keep the one they inherited and the engine says why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fanout._engine import Engine

from .test_engine import udp_socket

CAP_SYS_NICE = 23  # linux/capability.h


def thread_nice_values() -> dict[int, tuple[str, int]]:
    """Each thread of this process: its id, name and nice value (/proc/self/task/*/stat, as ps -L shows them)."""
    threads = {}
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()  # from field 3 (state) on
        threads[int(stat.parent.name)] = (name, int(fields[19 - 3]))
    return threads


@contextmanager
def engine_threads(**options: object) -> Iterator[tuple[Engine, dict[str, int]]]:
    """An engine with two workers, and the nice value of each thread it started (by name)."""
    before = thread_nice_values()
    webrtc = udp_socket()
    engine = Engine(webrtc.fileno(), cores=[0, 1], pin=False, **options)  # type: ignore[arg-type]
    try:
        started = {name: nice for tid, (name, nice) in thread_nice_values().items() if tid not in before}
        yield engine, started
    finally:
        engine.close()
        webrtc.close()


def may_lower_nice() -> bool:
    status = Path("/proc/self/status").read_text()
    effective = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
    return bool(effective >> CAP_SYS_NICE & 1)


def test_without_data_plane_nice_the_threads_keep_the_control_planes() -> None:
    control_plane = os.getpriority(os.PRIO_PROCESS, 0)
    with engine_threads() as (engine, started):
        assert started == {"fanout-worker-0": control_plane, "fanout-worker-1": control_plane, "fanout-receiver": control_plane}
        assert (engine.data_plane_nice, engine.data_plane_nice_refused) == (control_plane, None)


@pytest.mark.parametrize("nice", [5, -10])
def test_the_receiver_and_the_workers_take_the_nice_value_asked_for(nice: int) -> None:
    control_plane = os.getpriority(os.PRIO_PROCESS, 0)
    if nice < control_plane and not may_lower_nice():
        pytest.skip("lowering a nice value needs CAP_SYS_NICE")
    with engine_threads(data_plane_nice=nice) as (engine, started):
        assert started == {"fanout-worker-0": nice, "fanout-worker-1": nice, "fanout-receiver": nice}
        assert (engine.data_plane_nice, engine.data_plane_nice_refused) == (nice, None)
        assert os.getpriority(os.PRIO_PROCESS, 0) == control_plane, "the calling thread keeps its own"


# Run without CAP_SYS_NICE (dropped from the bounding set, so root loses it too).
WITHOUT_SYS_NICE = ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"]
REFUSED_ENGINE = """
import json, sys
from tests.engine.test_priority import engine_threads
with engine_threads(data_plane_nice=-10) as (engine, started):
    json.dump({"started": started, "nice": engine.data_plane_nice, "refused": engine.data_plane_nice_refused}, sys.stdout)
"""


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs setpriv and root")
def test_without_the_right_to_lower_it_the_threads_keep_their_nice_value_and_the_engine_says_why() -> None:
    control_plane = os.getpriority(os.PRIO_PROCESS, 0)
    result = subprocess.run(
        [*WITHOUT_SYS_NICE, sys.executable, "-c", REFUSED_ENGINE],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["started"] == {
        "fanout-worker-0": control_plane,
        "fanout-worker-1": control_plane,
        "fanout-receiver": control_plane,
    }
    assert report["nice"] == control_plane
    assert report["refused"] == "Permission denied (os error 13)"


@pytest.mark.parametrize("nice", [-21, 20])
def test_a_nice_value_out_of_range_is_refused(nice: int) -> None:
    webrtc = udp_socket()
    with pytest.raises(ValueError, match=f"data_plane_nice must be in -20..=19, got {nice}"):
        Engine(webrtc.fileno(), data_plane_nice=nice)
    webrtc.close()
