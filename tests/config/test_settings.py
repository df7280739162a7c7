from pathlib import Path

import pytest

from fanout.config import network
from fanout.config.jcfg import ConfigError, parse
from fanout.config.network import InterfaceAddress, detect_advertised_ips
from fanout.config.settings import (
    ClusterSettings,
    ConnectionLimits,
    HttpSettings,
    Settings,
    TlsFiles,
    WebSocketSettings,
    read_settings,
)
from fanout.webrtc.ice import CONSENT_TIMEOUT


def settings_of(janus: str, http: str | None = None, websockets: str | None = None) -> tuple[Settings, list[str]]:
    return read_settings(
        parse(janus, "janus.jcfg"),
        parse(http, "janus.transport.http.jcfg") if http is not None else None,
        parse(websockets, "janus.transport.websockets.jcfg") if websockets is not None else None,
        detect_ips=lambda: ["192.0.2.7"],
    )


def test_empty_files_give_the_defaults() -> None:
    settings, refused = settings_of("", "", "")
    assert settings == Settings(advertised_ips=("192.0.2.7",))
    assert settings.session_timeout == 60
    assert settings.webrtc_port == 10000
    assert settings.webrtc_interface == "0.0.0.0"
    assert settings.http == HttpSettings(enabled=True, host="0.0.0.0", port=8088, base_path="/janus")
    assert settings.websocket == WebSocketSettings(enabled=True, host="0.0.0.0", port=8188)
    assert refused == []


def test_core_settings() -> None:
    settings, _ = settings_of(
        """
        general: { server_name = "edge-1"; session_timeout = 0; reclaim_session_timeout = 5;
                   candidates_timeout = 0; api_secret = "janusrocks" }
        media: { rtp_port_range = "40000-20000" }
        fanout: { webrtc_port = 0; webrtc_interface = "127.0.0.1" }
        """
    )
    assert settings.server_name == "edge-1"
    assert settings.session_timeout == 0
    assert settings.reclaim_session_timeout == 5
    assert settings.candidates_timeout == 45  # 0 is invalid and ignored, as in Janus
    assert settings.api_secret == "janusrocks"
    assert settings.rtp_port_range == (20000, 40000)
    assert settings.webrtc_port == 0
    assert settings.webrtc_interface == "127.0.0.1"


def test_the_core_rtp_port_range_is_reported_as_unused() -> None:
    """Janus's media.rtp_port_range bounds its WebRTC ports; fanout has one (webrtc_port)."""
    _, refused = settings_of('media: { rtp_port_range = "20000-40000" }')
    assert refused == [
        'janus.jcfg: media.rtp_port_range = "20000-40000" is not used by fanout: every viewer is served on '
        "fanout.webrtc_port (mountpoints' port = 0 take janus.plugin.streaming.jcfg's rtp_port_range)"
    ]


def test_log_settings() -> None:
    """Janus's log keys; fanout's lines carry timestamps unless debug_timestamps = false."""
    default, _ = settings_of("")
    assert (default.log_to_stdout, default.log_to_file, default.debug_timestamps) == (True, None, True)
    settings, _ = settings_of('general: { log_to_stdout = false; log_to_file = "/var/log/fanout.log"; debug_timestamps = false }')
    assert (settings.log_to_stdout, settings.log_to_file, settings.debug_timestamps) == (False, "/var/log/fanout.log", False)


def test_advertised_address_prefers_nat_mapping_then_interface_then_detection() -> None:
    both = 'general: { interface = "10.0.0.5" }\nnat: { nat_1_1_mapping = "198.51.100.1, 198.51.100.2" }'
    assert settings_of(both)[0].advertised_ips == ("198.51.100.1", "198.51.100.2")
    assert settings_of('general: { interface = "10.0.0.5" }')[0].advertised_ips == ("10.0.0.5",)
    assert settings_of('general: { interface = "lo" }')[0].advertised_ips == ("127.0.0.1",)
    assert settings_of("")[0].advertised_ips == ("192.0.2.7",)


def test_webrtc_port_binds_general_interface_unless_webrtc_interface_is_set() -> None:
    assert settings_of('general: { interface = "10.0.0.5" }')[0].webrtc_interface == "10.0.0.5"
    assert settings_of('general: { interface = "lo" }')[0].webrtc_interface == "127.0.0.1"
    own = 'general: { interface = "10.0.0.5" }\nfanout: { webrtc_interface = "127.0.0.1" }'
    assert settings_of(own)[0].webrtc_interface == "127.0.0.1"


def test_connection_limits_apply_to_every_http_and_websocket_listener() -> None:
    settings, refused = settings_of(
        """fanout: { header_timeout = 2.5; idle_timeout = 30; max_connections_per_address = 0;
                     websocket_max_message = 4096; websocket_max_send_queue = 65536 }""",
        "",
        "",
    )
    limits = ConnectionLimits(2.5, 30.0, 0, 4096, 65536)
    assert settings.http.limits == limits and settings.websocket.limits == limits
    assert refused == []
    assert settings_of("")[0].http.limits == ConnectionLimits()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("header_timeout", "0", "header_timeout must be a positive number of seconds"),
        ("idle_timeout", '"soon"', "idle_timeout must be a number"),
        ("max_connections_per_address", "-1", "max_connections_per_address must not be negative"),
        ("websocket_max_message", "0", "websocket_max_message must be positive"),
    ],
)
def test_bad_connection_limits_are_refused(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_of(f"fanout: {{ {key} = {value} }}")


def test_detection_skips_loopback_and_down_interfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        network,
        "interface_addresses",
        lambda: [
            InterfaceAddress("lo", "127.0.0.1", up=True, loopback=True),
            InterfaceAddress("eth0", "192.0.2.2", up=True, loopback=False),
            InterfaceAddress("eth1", "198.51.100.9", up=False, loopback=False),
            InterfaceAddress("eth2", "203.0.113.4", up=True, loopback=False),
        ],
    )
    assert detect_advertised_ips() == ["192.0.2.2", "203.0.113.4"]


def test_detection_on_a_loopback_only_host_gives_127_0_0_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network, "interface_addresses", lambda: [InterfaceAddress("lo", "127.0.0.1", True, True)])
    assert detect_advertised_ips() == ["127.0.0.1"]


def test_this_host_has_a_loopback_interface() -> None:
    assert InterfaceAddress("lo", "127.0.0.1", up=True, loopback=True) in network.interface_addresses()


def test_http_settings() -> None:
    settings, refused = settings_of(
        "",
        """
        general: { json = "compact"; base_path = "/api/janus/"; http = true; port = 18088; ip = "127.0.0.1"; https = false }
        admin: { admin_base_path = "/admin"; admin_http = false; admin_port = 7088; admin_https = false }
        cors: { allow_origin = "http://foo.example"; enforce_cors = true }
        certificates: { cert_pem = "/x.pem"; cert_key = "/x.key" }
        """,
    )
    assert settings.http == HttpSettings(
        enabled=True,
        host="127.0.0.1",
        port=18088,
        base_path="/api/janus",
        json="compact",
        allow_origin="http://foo.example",
        enforce_cors=True,
    )
    assert refused == []


def test_http_binds_to_a_named_interface() -> None:
    settings, _ = settings_of("", 'general: { interface = "lo" }')
    assert settings.http.host == "127.0.0.1"


def test_websocket_settings() -> None:
    settings, refused = settings_of(
        "",
        None,
        """
        general: { json = "plain"; ws = false; ws_port = 18188; ws_interface = "lo"; wss = false }
        admin: { admin_ws = false; admin_ws_port = 7188; admin_wss = false }
        certificates: { cert_pem = "/x.pem" }
        """,
    )
    assert settings.websocket == WebSocketSettings(enabled=False, host="127.0.0.1", port=18188, json="plain")
    assert refused == []


def test_admin_tls_and_acl_settings(tmp_path: Path) -> None:
    pem, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    pem.write_text("x")
    key.write_text("x")
    certificates = f'certificates: {{ cert_pem = "{pem}"; cert_key = "{key}" }}'
    settings, refused = settings_of(
        'general: { admin_secret = "a"; token_auth = true; debug_level = 5 }',
        "general: { https = true; secure_port = 8089; acl = \"127.,10.\" }\n"
        'admin: { admin_http = true; admin_port = 7000; admin_base_path = "/adm/"; admin_acl = "127." }\n' + certificates,
        'general: { wss = true; wss_port = 8990 }\nadmin: { admin_ws = "yes"; admin_ws_port = 7001 }\n' + certificates,
    )
    assert refused == []
    assert (settings.admin_secret, settings.token_auth, settings.debug_level) == ("a", True, 5)
    http = settings.http
    assert (http.https, http.secure_port, http.acl, http.tls) == (True, 8089, ("127.", "10."), TlsFiles(str(pem), str(key)))
    assert (http.admin_http, http.admin_port, http.admin_base_path, http.admin_acl) == (True, 7000, "/adm", ("127.",))
    ws = settings.websocket
    assert (ws.wss, ws.wss_port, ws.admin_ws, ws.admin_port) == (True, 8990, True, 7001)


def test_https_needs_its_certificate_files() -> None:
    with pytest.raises(ConfigError, match="cert_pem names no readable file"):
        settings_of("", 'general: { https = true }\ncertificates: { cert_pem = "/nonexistent.pem"; cert_key = "/nonexistent.key" }', "")


@pytest.mark.parametrize(
    ("janus", "http", "message"),
    [
        ("general: {\n session_timeout = -1\n}", "", "janus.jcfg:2: general.session_timeout must not be negative"),
        ('general: { session_timeout = "soon" }', "", 'janus.jcfg:1: general.session_timeout must be an integer, not "soon"'),
        ("fanout: { webrtc_port = 70000 }", "", "janus.jcfg:1: fanout.webrtc_port must be a port number, not 70000"),
        ("fanout: {\n ice_consent_timeout = 0\n}", "", "janus.jcfg:2: fanout.ice_consent_timeout must be a positive number of seconds, not 0.0"),
        ('media: { rtp_port_range = "20000" }', "", 'janus.jcfg:1: media.rtp_port_range must be a range like "20000-40000", not "20000"'),
        ('media: { rtp_port_range = "0-10" }', "", 'janus.jcfg:1: media.rtp_port_range must be a range of port numbers, not "0-10"'),
        ('nat: { nat_1_1_mapping = "my.host" }', "", "janus.jcfg:1: nat.nat_1_1_mapping 'my.host' is not an IP address"),
        ('general: { interface = "nosuch0" }', "", "janus.jcfg:1: general.interface 'nosuch0' is neither an IP address nor an interface with an IPv4 address"),
        ("", "general: { port = 0 }", "janus.transport.http.jcfg:1: general.port must be a port number, not 0"),
        ("", 'general: { base_path = "janus" }', "janus.transport.http.jcfg:1: general.base_path must start with '/'"),
        ("", 'general: { json = "pretty" }', 'janus.transport.http.jcfg:1: general.json must be one of indented, plain, compact, not "pretty"'),
        ("", "general: { http = 3 }", "janus.transport.http.jcfg:1: general.http must be true or false, not 3"),
        ("", "cors = 1", "janus.transport.http.jcfg:1: cors must be a group { ... }, not 1"),
    ],
)
def test_bad_values_name_file_line_and_key(janus: str, http: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        settings_of(janus, http)
    assert str(error.value) == message


def test_the_embedded_default_files_have_no_unread_keys() -> None:
    folder = Path(__file__).parents[2] / "python" / "fanout" / "config" / "default"
    janus = parse((folder / "janus.jcfg").read_text(), "janus.jcfg")
    http = parse((folder / "janus.transport.http.jcfg").read_text(), "janus.transport.http.jcfg")
    websockets = parse((folder / "janus.transport.websockets.jcfg").read_text(), "janus.transport.websockets.jcfg")
    read_settings(janus, http, websockets, detect_ips=lambda: ["127.0.0.1"])
    assert janus.unread() == http.unread() == websockets.unread() == []


def test_the_webrtc_receive_buffer() -> None:
    assert settings_of("")[0].webrtc_receive_buffer == 8 << 20
    assert settings_of("fanout: { webrtc_receive_buffer = 0 }")[0].webrtc_receive_buffer == 0
    with pytest.raises(ConfigError, match="webrtc_receive_buffer must not be negative"):
        settings_of("fanout: { webrtc_receive_buffer = -1 }")


def test_the_ice_consent_timeout() -> None:
    """fanout.ice_consent_timeout: RFC 7675's 30 s unless set, any positive number of seconds."""
    assert CONSENT_TIMEOUT == 30.0
    assert settings_of("")[0].ice_consent_timeout == CONSENT_TIMEOUT
    janus = parse("fanout: { ice_consent_timeout = 7.5 }", "janus.jcfg")
    settings, refused = read_settings(janus, None, None, detect_ips=lambda: ["192.0.2.7"])
    assert settings.ice_consent_timeout == 7.5
    assert refused == [] and janus.unread() == []
    assert settings_of("fanout: { ice_consent_timeout = 12 }")[0].ice_consent_timeout == 12.0
    for bad in ("0", "-1", "1e999"):
        with pytest.raises(ConfigError, match="fanout.ice_consent_timeout must be a positive number of seconds"):
            settings_of(f"fanout: {{ ice_consent_timeout = {bad} }}")
    with pytest.raises(ConfigError, match='fanout.ice_consent_timeout must be a number, not "soon"'):
        settings_of('fanout: { ice_consent_timeout = "soon" }')


def test_engine_cores_and_pinning() -> None:
    settings = settings_of('fanout: { engine_cores = "0"; engine_pin = false }')[0]
    assert (settings.engine_cores, settings.engine_pin) == ((0,), False)
    assert settings_of("")[0].engine_cores is None and settings_of("")[0].engine_pin is True
    with pytest.raises(ConfigError, match="engine_cores must list CPU numbers"):
        settings_of('fanout: { engine_cores = "zero" }')
    with pytest.raises(ConfigError, match="names CPU 4096"):
        settings_of('fanout: { engine_cores = "0,4096" }')


def test_max_send_delay() -> None:
    assert settings_of("")[0].max_send_delay_ms == 100
    assert settings_of("fanout: { max_send_delay_ms = 50 }")[0].max_send_delay_ms == 50
    for bad in ("0", "-5", "10001"):
        with pytest.raises(ConfigError, match="max_send_delay_ms must be between 1 and 10000 milliseconds"):
            settings_of(f"fanout: {{ max_send_delay_ms = {bad} }}")


def test_data_plane_nice() -> None:
    assert settings_of("")[0].data_plane_nice == -5
    assert settings_of("fanout: { data_plane_nice = -20 }")[0].data_plane_nice == -20
    assert settings_of("fanout: { data_plane_nice = 0 }")[0].data_plane_nice == 0
    for bad in ("-21", "20"):
        with pytest.raises(ConfigError, match="data_plane_nice must be a nice value between -20 and 19"):
            settings_of(f"fanout: {{ data_plane_nice = {bad} }}")


SECRET = "sixteen-chars-ok"


def test_a_cluster_group_with_a_secret_and_no_redis_relays_without_a_registry() -> None:
    settings, _ = settings_of('cluster: { secret = "sixteen or more chars"; node_name = "edge-1"; relay_address = "127.0.0.3" }')
    assert settings.cluster is not None
    assert (settings.cluster.redis_url, settings.cluster.node_name, settings.cluster.relay_address) == ("", "edge-1", "127.0.0.3")


def test_a_cluster_group_with_neither_redis_nor_a_secret_is_standalone() -> None:
    settings, _ = settings_of('cluster: { node_name = "edge-1" }')
    assert settings.cluster is None


def test_cluster_settings_and_their_defaults() -> None:
    settings, refused = settings_of(
        f'cluster: {{ redis_url = "redis://127.0.0.1:6379/0"; secret = "{SECRET}"; node_name = "edge-1" }}',
        "general: { port = 8090 }",
    )
    assert settings.cluster == ClusterSettings(
        redis_url="redis://127.0.0.1:6379/0",
        secret=SECRET,
        node_name="edge-1",
        relay_address="192.0.2.7",  # the first advertised address
        public_url="http://192.0.2.7:8090",  # the HTTP transport's port on it
    )
    assert (settings.cluster.heartbeat_interval, settings.cluster.node_ttl) == (1.0, 3.0)
    assert (settings.cluster.max_load, settings.cluster.relay_linger, settings.cluster.accept_viewers) == (0.8, 10.0, True)
    assert refused == []


def test_every_cluster_setting() -> None:
    settings, _ = settings_of(
        f"""cluster: {{
            redis_url = "unix:///run/redis.sock"; secret = "{SECRET}"; node_name = "origin.a-1"
            relay_address = "10.0.0.2"; public_url = "https://edge.example/"; websocket_url = "wss://edge.example:8989"
            cluster_name = "town-hall"; accept_viewers = false; max_load = 0.5; max_viewers = 2000
            heartbeat_interval = 0.5; node_ttl = 2; relay_linger = 30
        }}"""
    )
    assert settings.cluster == ClusterSettings(
        redis_url="unix:///run/redis.sock",
        secret=SECRET,
        node_name="origin.a-1",
        relay_address="10.0.0.2",
        public_url="https://edge.example",  # without the trailing slash
        websocket_url="wss://edge.example:8989",
        cluster_name="town-hall",
        accept_viewers=False,
        max_load=0.5,
        max_viewers=2000,
        heartbeat_interval=0.5,
        node_ttl=2.0,
        relay_linger=30.0,
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("redis_url", '"http://127.0.0.1:6379"', "redis_url must be a redis://, rediss:// or unix:// URL"),
        ("secret", '"short"', "secret must be at least 16 characters"),
        ("node_name", '"edge 1"', "node_name must be 1 to 64 letters"),
        ("relay_address", '"edge.example"', "relay_address must be an IP address"),
        ("public_url", '"edge.example:8088"', "public_url must be an http:// or https:// URL"),
        ("websocket_url", '"http://edge.example"', "websocket_url must be a ws:// or wss:// URL"),
        ("max_load", "1.5", r"max_load must be in \(0, 1\]"),
        ("max_load", "0", r"max_load must be in \(0, 1\]"),
        ("heartbeat_interval", "0", "heartbeat_interval must be a positive number of seconds"),
        ("node_ttl", "1", r"node_ttl must be longer than heartbeat_interval \(1.0 s\)"),
        ("relay_linger", "-1", "relay_linger must be a positive number of seconds"),
        ("max_viewers", "-5", "max_viewers"),
    ],
)
def test_bad_cluster_settings_are_refused_with_the_key_named(key: str, value: str, message: str) -> None:
    settings = {"redis_url": '"redis://127.0.0.1:6379"', "secret": f'"{SECRET}"', "node_name": '"edge-1"'}
    settings[key] = value
    text = "; ".join(f"{name} = {text}" for name, text in settings.items())
    with pytest.raises(ConfigError, match=message) as error:
        settings_of(f"cluster: {{ {text} }}")
    assert str(error.value).startswith("janus.jcfg:")


def test_a_cluster_secret_too_short_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 16 characters"):
        settings_of('cluster: { secret = "short" }')


def test_ipv6_makes_the_sockets_dual_stack_and_adds_ipv6_candidates() -> None:
    """Janus's media.ipv6: "::" for every socket left on every address; IPv6 addresses advertised."""
    janus = parse("media: { ipv6 = true; ipv6_linklocal = true }", "janus.jcfg")
    http = parse('general: { http = true; ip = "127.0.0.1" }', "janus.transport.http.jcfg")
    settings, _ = read_settings(janus, http, None, detect_ips=lambda: ["192.0.2.7"], detect_ipv6_ips=lambda: ["2001:db8::7"])
    assert settings.ipv6
    assert settings.webrtc_interface == "::"
    assert settings.advertised_ips == ("192.0.2.7", "2001:db8::7")
    assert settings.http.host == "127.0.0.1" and settings.http.admin_host == "::"
    assert settings.websocket.host == "::" and settings.websocket.wss_host == "::"
    assert janus.unread() == []


def test_ipv6_loopback_is_advertised_only_beside_ipv4_loopback() -> None:
    janus = parse("media: { ipv6 = true }", "janus.jcfg")
    alone, _ = read_settings(janus, None, None, detect_ips=lambda: ["127.0.0.1"], detect_ipv6_ips=lambda: ["::1"])
    assert alone.advertised_ips == ("127.0.0.1", "::1")
    beside, _ = read_settings(janus, None, None, detect_ips=lambda: ["192.0.2.7"], detect_ipv6_ips=lambda: ["::1"])
    assert beside.advertised_ips == ("192.0.2.7",)
    mapped, _ = settings_of('media: { ipv6 = true }\nnat: { nat_1_1_mapping = "198.51.100.1,2001:db8::1" }')
    assert mapped.advertised_ips == ("198.51.100.1", "2001:db8::1")


def test_without_ipv6_nothing_listens_on_ipv6() -> None:
    settings, _ = settings_of("")
    assert not settings.ipv6 and settings.webrtc_interface == "0.0.0.0" and settings.http.host == "0.0.0.0"


def test_ipv6_addresses_of_the_host(tmp_path: Path) -> None:
    """/proc/net/if_inet6: global and unique local addresses; link-local, loopback, tentative ones left out."""
    table = tmp_path / "if_inet6"
    table.write_text(
        "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n"
        "fd000000000000000000000000000002 04 40 00 80     eth0\n"
        "20010db8000000000000000000000009 04 40 00 40     eth0\n"
        "00000000000000000000000000000001 01 80 10 80       lo\n"
    )
    assert network.detect_advertised_ipv6_ips(str(table)) == ["fd00::2"]
    table.write_text("00000000000000000000000000000001 01 80 10 80       lo\n")
    assert network.detect_advertised_ipv6_ips(str(table)) == ["::1"]
    assert network.detect_advertised_ipv6_ips(str(tmp_path / "missing")) == []


def test_v4_mapped_addresses_are_written_as_ipv4() -> None:
    assert network.unmapped("::ffff:192.0.2.1") == "192.0.2.1"
    assert network.unmapped("::1") == "::1" and network.unmapped("192.0.2.1") == "192.0.2.1"
