import logging
import shutil
from pathlib import Path

import pytest

from fanout.config import DEFAULT_FOLDER, ConfigError, load_config


def detected() -> list[str]:
    return ["192.0.2.7"]


def test_embedded_default() -> None:
    config = load_config(None, detect_ips=detected)
    assert config.embedded
    assert config.folder == DEFAULT_FOLDER
    settings = config.settings
    assert (settings.http.port, settings.http.base_path, settings.http.allow_origin) == (8088, "/janus", None)
    assert settings.websocket.port == 8188
    assert settings.webrtc_port == 10000
    assert settings.advertised_ips == ("192.0.2.7",)
    assert config.refused == []


def test_folder_with_only_janus_jcfg_uses_transport_defaults(tmp_path: Path) -> None:
    (tmp_path / "janus.jcfg").write_text("general: { session_timeout = 30 }\n")
    config = load_config(tmp_path, detect_ips=detected)
    assert not config.embedded
    assert config.settings.session_timeout == 30
    assert config.settings.http.port == 8088
    assert config.settings.websocket.enabled
    assert config.unsupported() == []


def test_missing_folder_or_core_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothere: not a configuration folder$"):
        load_config(tmp_path / "nothere")
    with pytest.raises(ConfigError, match=r"^janus.jcfg: not found in "):
        load_config(tmp_path)


def test_parse_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "janus.jcfg").write_text("general: {}\n")
    (tmp_path / "janus.transport.http.jcfg").write_text("general: {\n  port 8088\n}\n")
    with pytest.raises(ConfigError, match=r"^janus.transport.http.jcfg:2: expected '=' or ':' after 'port'$"):
        load_config(tmp_path)


def test_plugin_file_is_parsed_on_demand(tmp_path: Path) -> None:
    (tmp_path / "janus.jcfg").write_text("general: {}\n")
    (tmp_path / "janus.plugin.streaming.jcfg").write_text('general: {}\nmp: { type = "rtp"; id = 1; secret = "x" }\n')
    config = load_config(tmp_path, detect_ips=detected)
    assert config.unsupported() == ["janus.plugin.streaming.jcfg: this file is not used by fanout and is ignored"]
    streaming = config.plugin_file("janus.plugin.streaming")
    assert streaming is not None
    assert config.plugin_file("janus.plugin.streaming") is streaming
    assert config.plugin_file("janus.plugin.videoroom") is None
    mountpoint = streaming.get_group("mp")
    assert mountpoint is not None
    assert (mountpoint.get_str("type"), mountpoint.get_int("id")) == ("rtp", 1)
    assert config.unsupported() == ["janus.plugin.streaming.jcfg: mp.secret is not supported by fanout and is ignored"]


def test_janus_own_configuration_folder_is_reported_key_by_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "janus"
    shutil.copytree("/etc/janus", folder, ignore=shutil.ignore_patterns("janus.transport.mqtt.jcfg"))
    with (folder / "janus.jcfg").open("a") as janus:
        janus.write("\nextra: {\n  debug_timestamps = true\n}\n")
    config = load_config(folder, detect_ips=detected)
    assert config.settings.http.port == 8088
    assert config.plugin_file("janus.plugin.streaming") is not None
    with caplog.at_level(logging.WARNING):
        lines = config.report_unsupported()
    assert lines[:9] == [
        "janus.jcfg: general.configs_folder is not supported by fanout and is ignored",
        "janus.jcfg: general.plugins_folder is not supported by fanout and is ignored",
        "janus.jcfg: general.transports_folder is not supported by fanout and is ignored",
        "janus.jcfg: general.events_folder is not supported by fanout and is ignored",
        "janus.jcfg: general.loggers_folder is not supported by fanout and is ignored",
        "janus.jcfg: general.protected_folders is not supported by fanout and is ignored",
        "janus.jcfg: nat.nice_debug is not supported by fanout and is ignored",
        "janus.jcfg: nat.ice_ignore_list is not supported by fanout and is ignored",
        "janus.jcfg: extra.debug_timestamps is not supported by fanout and is ignored",
    ]
    assert "janus.plugin.streaming.jcfg: rtp-sample.type is not supported by fanout and is ignored" in lines
    assert "janus.plugin.videoroom.jcfg: this file is not used by fanout and is ignored" in lines
    assert not any(line.startswith("janus.transport.") for line in lines if "is not used" not in line)
    assert [record.getMessage() for record in caplog.records] == lines
    assert all(record.levelno == logging.WARNING for record in caplog.records)
