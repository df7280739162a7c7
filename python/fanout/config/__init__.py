"""Configuration: Janus's ``.jcfg`` files (libconfig syntax), typed settings, the embedded default."""

from fanout.config.jcfg import ConfigError, ConfigList, Group, Location
from fanout.config.loader import DEFAULT_FOLDER, Config, load_config
from fanout.config.settings import HttpSettings, Settings, WebSocketSettings

__all__ = [
    "DEFAULT_FOLDER",
    "Config",
    "ConfigError",
    "ConfigList",
    "Group",
    "HttpSettings",
    "Location",
    "Settings",
    "WebSocketSettings",
    "load_config",
]
