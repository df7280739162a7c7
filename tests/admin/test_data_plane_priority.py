"""``fanout.data_plane_nice`` in a real ``fanout serve``: the engine's threads run at it (as ps
shows), ahead of the control plane's thread; Admin ``get_status`` reports both; without the right
to lower a nice value the server still starts, its threads level with the control plane, and it
says so at start with how to allow it."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from fanout.server import data_plane_priority_report
from tests.admin.conftest import AdminAddresses, admin_config
from tests.support.server import FanoutProcess

ADMIN_SECRET = "priority"
WITHOUT_SYS_NICE = ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"]


def thread_nice_values(pid: int) -> dict[str, int]:
    """A process's threads by name (the engine's are fanout-worker-N and fanout-receiver) and their nice values."""
    threads = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        text = stat.read_text()
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()  # from field 3 (state) on
        threads[name if name.startswith("fanout-") else f"{name}/{stat.parent.name}"] = int(fields[19 - 3])
    return threads


def server_on(folder: Path, *, without_sys_nice: bool) -> tuple[FanoutProcess, AdminAddresses]:
    addresses = admin_config(folder, admin_secret=ADMIN_SECRET)
    janus = folder / "janus.jcfg"
    janus.write_text(janus.read_text().replace("fanout: {\n", 'fanout: {\n\tengine_cores = "0"\n', 1))  # one worker
    process = FanoutProcess(folder)
    if without_sys_nice:
        process.command = [*WITHOUT_SYS_NICE, *process.command]
    return process, addresses


async def get_status(addresses: AdminAddresses) -> dict[str, object]:
    request = {"janus": "get_status", "transaction": "status", "admin_secret": ADMIN_SECRET}
    async with aiohttp.ClientSession() as http, http.post(addresses.urls["admin_url"], json=request) as response:
        reply = await response.json()
    assert reply["janus"] == "success", reply
    return reply["status"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def privileged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FanoutProcess, AdminAddresses]]:
    process, addresses = server_on(tmp_path_factory.mktemp("privileged") / "config", without_sys_nice=False)
    with process:
        yield process, addresses


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering a nice value needs root (or CAP_SYS_NICE)")
async def test_the_engines_threads_run_ahead_of_the_control_plane(privileged: tuple[FanoutProcess, AdminAddresses]) -> None:
    process, addresses = privileged
    assert process.process is not None
    control_plane = os.getpriority(os.PRIO_PROCESS, 0)  # the server's main thread inherits this test's
    threads = thread_nice_values(process.process.pid)
    engine = {name: nice for name, nice in threads.items() if name.startswith("fanout-")}
    assert engine == {"fanout-worker-0": -5, "fanout-receiver": -5, "fanout-socket": -5}, threads
    assert threads[f"python/{process.process.pid}"] == control_plane, "the control plane's thread keeps its nice value"
    status = await get_status(addresses)
    assert (status["data_plane_nice"], status["control_plane_nice"], status["data_plane_nice_refused"]) == (
        -5,
        control_plane,
        None,
    )
    assert f"the engine's threads run at nice -5, ahead of the control plane's {control_plane}" in process.output


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs setpriv and root")
async def test_without_the_right_the_server_runs_level_and_says_how_to_allow_it(tmp_path: Path) -> None:
    process, addresses = server_on(tmp_path / "config", without_sys_nice=True)
    control_plane = os.getpriority(os.PRIO_PROCESS, 0)  # the server's main thread inherits this test's
    with process:
        assert process.process is not None
        threads = thread_nice_values(process.process.pid)
        assert {name: nice for name, nice in threads.items() if name.startswith("fanout-")} == {
            "fanout-worker-0": control_plane,
            "fanout-receiver": control_plane,
            "fanout-socket": control_plane,
        }
        status = await get_status(addresses)
        assert (status["data_plane_nice"], status["control_plane_nice"]) == (control_plane, control_plane)
        assert status["data_plane_nice_refused"] == "Permission denied (os error 13)"
        assert (
            "the engine's threads could not take fanout.data_plane_nice = -5 (Permission denied (os error 13)): "
            f"they run at nice {control_plane}, level with the control plane"
        ) in process.output
        assert "CAP_SYS_NICE" in process.output and "LimitNICE=-5" in process.output


def test_a_data_plane_not_below_the_control_plane_is_reported() -> None:
    level, message = data_plane_priority_report(-10, -10, None, -10)
    assert level == logging.WARNING
    assert message == (
        "the engine's threads run at nice -10, not below the control plane's -10: a stall of the control plane on "
        "a core they share can make them drop packets late; set fanout.data_plane_nice below -10 (e.g. -20)"
    )
    assert data_plane_priority_report(-10, -10, None, 0) == (
        logging.INFO,
        "the engine's threads run at nice -10, ahead of the control plane's 0",
    )
