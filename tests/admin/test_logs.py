"""Where fanout's log lines go (janus.jcfg's log_to_stdout, log_to_file, debug_timestamps), and
what info and get_status say about it."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fanout.admin.logs import LogControl

from tests.admin.conftest import add_general
from tests.support.server import FanoutProcess, rtp_mountpoint, write_config


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield root
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("fanout").setLevel(logging.NOTSET)


def test_lines_go_to_the_log_file_without_timestamps(tmp_path: Path, root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    logs = LogControl()
    logs.configure(4, "text", stream, to_stdout=False, path=str(tmp_path / "fanout.log"), timestamps=False)
    logging.getLogger("fanout.test").info("viewer %d joined", 7)
    assert (tmp_path / "fanout.log").read_text() == "INFO fanout.test: viewer 7 joined\n"
    assert stream.getvalue() == ""
    assert (logs.to_stdout, logs.path, logs.timestamps) == (False, str(tmp_path / "fanout.log"), False)


def test_lines_go_to_both_with_timestamps(tmp_path: Path, root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    LogControl().configure(4, "text", stream, path=str(tmp_path / "fanout.log"))
    logging.getLogger("fanout.test").warning("slow viewer")
    written = (tmp_path / "fanout.log").read_text()
    assert written == stream.getvalue() and written.endswith(" WARNING fanout.test: slow viewer\n")
    assert written[:4].isdigit(), "a timestamp first"


def test_a_log_file_that_cannot_be_opened_stops_the_start(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    write_config(folder, rtp_mountpoint(1, 0, 0))
    add_general(folder, f'\tlog_to_file = "{tmp_path}/missing/fanout.log"\n')
    with pytest.raises(RuntimeError) as error:
        FanoutProcess(folder).start()
    assert f"the log file {tmp_path}/missing/fanout.log cannot be opened" in str(error.value)
