"""fanout's logs: Janus's levels (0-7) over Python's logging, changeable at run time, as text or JSON lines.

``set_log_level`` (Admin API) and ``general.debug_level`` (janus.jcfg) take
Janus's numbers: 0 none, 1 fatal, 2 error, 3 warning, 4 info, 5 verbose,
6 huge, 7 debug; 5 and above are Python's DEBUG. ``fanout.log_format = "json"``
writes one JSON object a line (``ts``, ``level``, ``logger``, ``message`` and
the record's extra fields), for log collectors.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

ROOT_LOGGER = "fanout"
JANUS_TO_PYTHON = {
    0: logging.CRITICAL + 10,  # nothing
    1: logging.CRITICAL,
    2: logging.ERROR,
    3: logging.WARNING,
    4: logging.INFO,
    5: logging.DEBUG,
    6: logging.DEBUG,
    7: logging.DEBUG,
}
PYTHON_NAMES = {"debug": 7, "info": 4, "warning": 3, "error": 2, "critical": 1}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TEXT_FORMAT_WITHOUT_TIME = "%(levelname)s %(name)s: %(message)s"
_STANDARD_ATTRIBUTES = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class LogControl:
    """The process's log level, in Janus's numbers, and the format of its lines."""

    def __init__(self, janus_level: int = 4) -> None:
        self.janus_level = janus_level
        self.explicit = False  # the command line chose the level: the configuration does not change it
        self.to_stdout = True
        self.path: str | None = None  # the log file, if there is one
        self.timestamps = True

    def configure(
        self,
        janus_level: int,
        log_format: str = "text",
        stream: TextIO | None = None,
        *,
        to_stdout: bool = True,
        path: str | None = None,
        timestamps: bool = True,
    ) -> None:
        """Install the root logger's handlers at ``janus_level``: text or JSON lines to ``stream``
        (stdout) unless ``to_stdout`` is false, and appended to the file ``path`` if given (OSError
        if it cannot be opened). Text lines start with a timestamp if ``timestamps``."""
        formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT if timestamps else TEXT_FORMAT_WITHOUT_TIME)
        handlers: list[logging.Handler] = []
        if path is not None:
            handlers.append(logging.FileHandler(path, encoding="utf-8"))
        if to_stdout:
            handlers.append(logging.StreamHandler(stream or sys.stdout))
        root = logging.getLogger()
        for previous in list(root.handlers):
            root.removeHandler(previous)
            if isinstance(previous, logging.FileHandler):
                previous.close()
        for handler in handlers:
            handler.setFormatter(formatter)
            root.addHandler(handler)
        self.to_stdout, self.path, self.timestamps = to_stdout, path, timestamps
        self.set_level(janus_level)

    def set_level(self, janus_level: int) -> None:
        """Janus's 0..7; ValueError outside."""
        if not 0 <= janus_level <= 7:
            raise ValueError(f"log level {janus_level} is not between 0 and 7")
        self.janus_level = janus_level
        logging.getLogger().setLevel(JANUS_TO_PYTHON[janus_level])
        logging.getLogger(ROOT_LOGGER).setLevel(JANUS_TO_PYTHON[janus_level])


LOGS = LogControl()
