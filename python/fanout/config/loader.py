"""Loading a Janus-style configuration folder (or fanout's embedded default)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fanout.config.jcfg import ConfigError, Group, load
from fanout.config.network import detect_advertised_ips
from fanout.config.settings import Settings, read_settings

logger = logging.getLogger(__name__)

DEFAULT_FOLDER = Path(__file__).parent / "default"
CORE_FILE = "janus.jcfg"
HTTP_FILE = "janus.transport.http.jcfg"
WEBSOCKETS_FILE = "janus.transport.websockets.jcfg"


@dataclass
class Config:
    """A loaded configuration folder: typed core settings and every parsed file.

    Plugins get their file with :meth:`plugin_file` and read it with the typed
    getters of :class:`~fanout.config.jcfg.Group`; after everyone has read
    what they use, :meth:`report_unsupported` names every setting left unread.
    """

    folder: Path
    settings: Settings
    files: dict[str, Group] = field(default_factory=dict)  # file name -> parsed root
    refused: list[str] = field(default_factory=list)  # settings asking for features fanout lacks

    @property
    def embedded(self) -> bool:
        return self.folder == DEFAULT_FOLDER

    def plugin_file(self, package: str) -> Group | None:
        """``<package>.jcfg`` parsed (e.g. janus.plugin.streaming.jcfg), None if the folder has none."""
        name = f"{package}.jcfg"
        if name not in self.files:
            path = self.folder / name
            if not path.is_file():
                return None
            self.files[name] = load(path)
        return self.files[name]

    def unsupported(self) -> list[str]:
        """One line per setting fanout ignores, e.g.
        ``janus.jcfg: general.debug_colors is not supported by fanout and is ignored``."""
        lines = list(self.refused)
        for name, root in self.files.items():
            lines.extend(f"{name}: {key} is not supported by fanout and is ignored" for key in root.unread())
        for path in sorted(self.folder.glob("*.jcfg")):
            if path.name not in self.files:
                lines.append(f"{path.name}: this file is not used by fanout and is ignored")
        return lines

    def report_unsupported(self, log: logging.Logger = logger) -> list[str]:
        """Log a warning for every ignored setting; returns the lines."""
        lines = self.unsupported()
        for line in lines:
            log.warning("%s", line)
        return lines


def load_config(folder: Path | str | None = None, *, detect_ips: Callable[[], list[str]] = detect_advertised_ips) -> Config:
    """Load ``folder`` (janus.jcfg and the transports' files), or fanout's embedded default.

    janus.jcfg must exist; a missing transport file means that transport's
    defaults. Raises :class:`ConfigError` naming the file and line of any problem."""
    path = DEFAULT_FOLDER if folder is None else Path(folder)
    if not path.is_dir():
        raise ConfigError(f"{path}: not a configuration folder")
    core_path = path / CORE_FILE
    if not core_path.is_file():
        raise ConfigError(f"{CORE_FILE}: not found in {path}")
    files: dict[str, Group] = {CORE_FILE: load(core_path)}
    for name in (HTTP_FILE, WEBSOCKETS_FILE):
        if (path / name).is_file():
            files[name] = load(path / name)
    settings, refused = read_settings(
        files[CORE_FILE], files.get(HTTP_FILE), files.get(WEBSOCKETS_FILE), detect_ips=detect_ips
    )
    return Config(folder=path, settings=settings, files=files, refused=refused)
