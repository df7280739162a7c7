"""The STUN/TURN servers handed to viewers, and TURN REST API credentials coturn accepts."""

from __future__ import annotations

import pytest

from fanout.config.jcfg import ConfigError, parse
from fanout.config.settings import IceServerSettings, read_settings
from fanout.webrtc.ice_servers import IceServer, ice_servers, mint_turn_credentials


def nat_settings(nat: str) -> tuple[IceServerSettings, list[str]]:
    settings, refused = read_settings(parse(f"nat: {{ {nat} }}", "janus.jcfg"), None, None, detect_ips=lambda: ["192.0.2.7"])
    return settings.ice_servers, refused


def test_credentials_are_the_turn_rest_api_ones() -> None:
    """Checked against openssl: echo -n 1700003600:alice | openssl dgst -sha1 -hmac coturn-secret -binary | base64"""
    assert mint_turn_credentials("coturn-secret", "alice", 3600, 1_700_000_000.7) == (
        "1700003600:alice",
        "1lobeIezgenyLqw/MsCKXLuSl7s=",
    )


def test_no_servers_configured_hands_out_none() -> None:
    settings, refused = nat_settings("")
    assert settings == IceServerSettings()
    assert ice_servers(settings, 0) == [] and refused == []


def test_stun_and_turn_with_a_secret() -> None:
    settings, _ = nat_settings(
        'stun_server = "stun.example.net"; stun_port = 19302; turn_server = "turn.example.net"; turn_port = 443; '
        'turn_type = "udp, tcp, tls"; turn_secret = "s3cret"; turn_ttl = 600; turn_user = "viewer"'
    )
    stun, turn = ice_servers(settings, 1000)
    assert stun == IceServer(("stun:stun.example.net:19302",))
    assert turn.urls == (
        "turn:turn.example.net:443?transport=udp",
        "turn:turn.example.net:443?transport=tcp",
        "turns:turn.example.net:443?transport=tcp",
    )
    assert (turn.username, turn.credential) == mint_turn_credentials("s3cret", "viewer", 600, 1000)
    assert turn.as_rtc_ice_server() == {"urls": list(turn.urls), "username": "1600:viewer", "credential": turn.credential}


def test_turn_with_a_fixed_user_and_an_ipv6_server() -> None:
    settings, _ = nat_settings('turn_server = "2001:db8::1"; turn_user = "bob"; turn_pwd = "pa\\"ss"')
    (turn,) = ice_servers(settings, 0)
    assert turn == IceServer(("turn:[2001:db8::1]:3478?transport=udp",), "bob", 'pa"ss')
    assert turn.link_headers() == [
        '<turn:[2001:db8::1]:3478?transport=udp>; rel="ice-server"; username="bob"; credential="pa\\"ss"; '
        'credential-type="password"'
    ]
    assert IceServer(("stun:a:3478",)).link_headers() == ['<stun:a:3478>; rel="ice-server"']


@pytest.mark.parametrize(
    ("nat", "message"),
    [
        ('turn_server = "t"; turn_secret = "s"; turn_type = "quic"', 'nat.turn_type must be one or more of udp, tcp, tls, not "quic"'),
        ('turn_server = "t"', "nat.turn_server needs nat.turn_user and nat.turn_pwd, or nat.turn_secret"),
        ('turn_server = "t"; turn_user = "u"', "nat.turn_server needs nat.turn_user and nat.turn_pwd"),
        ('turn_server = "t"; turn_pwd = "p"; turn_secret = "s"', "nat.turn_secret and nat.turn_pwd exclude each other"),
        ('turn_server = "t"; turn_secret = "s"; turn_ttl = 0', "nat.turn_ttl must be positive"),
        ('turn_server = "t"; turn_secret = "s"; turn_port = 70000', "nat.turn_port must be a port number"),
    ],
)
def test_bad_turn_settings_are_refused(nat: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        nat_settings(nat)


def test_janus_turn_rest_api_is_reported_unsupported() -> None:
    """Janus fetches credentials from an HTTP API for its own use; fanout mints them for viewers."""
    group = parse('nat: { turn_rest_api = "https://x"; turn_rest_api_key = "k" }', "janus.jcfg")
    read_settings(group, None, None, detect_ips=lambda: ["192.0.2.7"])
    assert group.unread() == ["nat.turn_rest_api", "nat.turn_rest_api_key"]
