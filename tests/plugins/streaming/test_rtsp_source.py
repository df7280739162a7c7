"""rtsp mountpoints: their definition (Janus's keys), the streams a server's tracks
become, and saving them back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fanout.config.jcfg import load, parse
from fanout.plugins.streaming.config import MountpointConfigError, mountpoints_from_file, parse_mountpoint
from fanout.plugins.streaming.errors import StreamingError
from fanout.plugins.streaming.management import mountpoint_from_create
from fanout.plugins.streaming.persistence import save_mountpoint
from fanout.plugins.streaming.rtsp_source import connect, streams_from_choices, streams_from_tracks
from fanout.sources.rtsp.description import Track

CAMERA = {"type": "rtsp", "id": 99, "description": "RTSP Test", "video": True, "url": "rtsp://127.0.0.1:8554/unicast"}
SPROP = "Z0LADdoFB+wFqDAwNSgAAAMACAAAAwHkeKFV,aM48gA=="


def track(kind: str, rtpmap: str, payload_type: int = 96, fmtp: str | None = None) -> Track:
    encoding, clock, *channels = rtpmap.split("/")
    return Track(kind, payload_type, encoding, int(clock), int(channels[0]) if channels else None, fmtp, "rtsp://cam/t")


def test_janus_sample_rtsp_mountpoint_with_its_defaults() -> None:
    config, unsupported = parse_mountpoint("rtsp-test", CAMERA)
    assert unsupported == []
    assert config.streams == ()  # until the server is described
    rtsp = config.rtsp
    assert rtsp is not None
    assert (rtsp.url, rtsp.failcheck, rtsp.reconnect_delay, rtsp.session_timeout, rtsp.timeout, rtsp.connect_timeout) == (
        "rtsp://127.0.0.1:8554/unicast", True, 5, 0, 10, 5,
    )  # fmt: skip
    assert [choice.kind for choice in rtsp.tracks] == ["video"]
    assert (rtsp.transport, rtsp.tls_cafile, rtsp.tls_verify) == ("auto", None, True)  # fanout's own keys


def test_the_legacy_rtsp_check_spelling_is_taken_as_rtsp_failcheck() -> None:
    config, _ = parse_mountpoint("m", CAMERA | {"rtsp_check": False})
    assert config.rtsp is not None and not config.rtsp.failcheck


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"url": None}, "missing 'url'"),
        ({"url": "http://cam/"}, "'url' must be an rtsp:// or rtsps:// URL"),
        ({"rtsp_transport": "sctp"}, "'rtsp_transport' must be auto, udp or tcp, not 'sctp'"),
        ({"url": "rtsps://cam/", "rtsp_transport": "udp"}, "'rtsp_transport' cannot be udp for an rtsps:// URL"),
        ({"video": False}, "no audio or video have to be streamed"),
        ({"rtsp_reconnect_delay": -1}, "'rtsp_reconnect_delay' can't be smaller than zero"),
        ({"videocodec": "opus"}, "codec 'opus' is not a video codec"),
        ({"videopt": 300}, "'videopt' must be an RTP payload type"),
    ],
)
def test_bad_rtsp_definitions_are_refused_with_the_key(overrides: dict[str, Any], message: str) -> None:
    group = {key: value for key, value in (CAMERA | overrides).items() if value is not None}
    with pytest.raises(MountpointConfigError, match=message):
        parse_mountpoint("m", group)


def test_a_vp8_track_becomes_a_stream_with_the_servers_payload_type() -> None:
    config, _ = parse_mountpoint("m", CAMERA | {"audio": True})
    tracks = (track("video", "VP8/90000", 97), track("audio", "opus/48000/2", 98))
    audio, video = streams_from_tracks(config, tracks)
    assert (audio.mid, audio.codec.name, audio.payload_type) == ("a", "opus", 98)
    assert (video.mid, video.codec.name, video.payload_type, video.port, video.rtcp_port) == ("v", "vp8", 97, 0, 0)


def test_h264_parameter_sets_from_the_sdp_become_h264sps() -> None:
    config, _ = parse_mountpoint("m", CAMERA)
    fmtp = f"packetization-mode=1;sprop-parameter-sets={SPROP};profile-level-id=42c00d"
    (video,) = streams_from_tracks(config, (track("video", "H264/90000", 96, fmtp),))
    assert video.h264sps == SPROP
    assert video.fmtp == fmtp  # viewers are offered what the camera sends


def test_a_servers_fmtp_with_control_characters_is_not_offered(caplog: pytest.LogCaptureFixture) -> None:
    """The camera's SDP is split into lines at LF: a lone CR stays in its fmtp, which
    every viewer's offer would carry."""
    config, _ = parse_mountpoint("m", CAMERA)
    fmtp = "packetization-mode=1\ra=candidate:1 1 udp 2130706431 203.0.113.66 9 typ host"
    (video,) = streams_from_tracks(config, (track("video", "H264/90000", 96, fmtp),))
    assert video.fmtp == video.codec.default_fmtp
    assert "mountpoint 99: 'fmtp' must not contain control characters" in caplog.text


def test_overrides_change_what_viewers_are_offered() -> None:
    config, _ = parse_mountpoint("m", CAMERA | {"videopt": 100, "videofmtp": "profile-level-id=42e01f;packetization-mode=1"})
    (video,) = streams_from_tracks(config, (track("video", "H264/90000", 96, "packetization-mode=1"),))
    assert (video.payload_type, video.fmtp) == (100, "profile-level-id=42e01f;packetization-mode=1")


def test_the_first_track_fanout_can_relay_is_taken() -> None:
    config, _ = parse_mountpoint("m", CAMERA)
    (video,) = streams_from_tracks(config, (track("video", "MP4V-ES/90000", 96), track("video", "H264/90000", 97)))
    assert (video.codec.name, video.payload_type) == ("h264", 97)
    with pytest.raises(MountpointConfigError, match=r"no video track fanout can relay \(it offers: MP4V-ES/90000\)"):
        streams_from_tracks(config, (track("video", "MP4V-ES/90000"),))


def test_without_a_description_the_overrides_name_the_streams() -> None:
    config, _ = parse_mountpoint("m", CAMERA | {"rtsp_failcheck": False, "videocodec": "vp8"})
    (video,) = streams_from_choices(config)
    assert (video.codec.name, video.payload_type) == ("vp8", 96)
    config, _ = parse_mountpoint("m", CAMERA | {"rtsp_failcheck": False})
    with pytest.raises(MountpointConfigError, match="'videocodec' does not say"):
        streams_from_choices(config)


def test_credentials_come_from_rtsp_user_or_the_url() -> None:
    config, _ = parse_mountpoint("m", CAMERA | {"url": "rtsp://admin:pw@cam/live"})
    assert config.rtsp is not None
    connection = connect(config.rtsp)
    assert connection.url == "rtsp://cam/live"
    assert connection.client.credentials is not None and connection.client.credentials.username == "admin"
    config, _ = parse_mountpoint("m", CAMERA | {"url": "rtsp://admin:pw@cam/live", "rtsp_user": "op", "rtsp_pwd": "x"})
    assert config.rtsp is not None
    assert connect(config.rtsp).client.credentials == type(connection.client.credentials)("op", "x")


def test_rtsp_mountpoints_are_saved_with_janus_keys(tmp_path: Path) -> None:
    group = parse(
        'type = "rtsp"\nid = 99\ndescription = "RTSP Test"\naudio = true\nvideo = true\nvideocodec = "h264"\n'
        'url = "rtsp://127.0.0.1:8554/unicast"\nrtsp_user = "username"\nrtsp_pwd = "password"\n'
        "rtsp_reconnect_delay = 2\nrtsp_failcheck = false\nrtsp_quirk = true\n"
        'rtsp_transport = "tcp"\nrtsp_cafile = "/etc/cameras.pem"\nrtsp_tls_verify = false\n'
    )
    config, unsupported = parse_mountpoint("rtsp-test", group)
    assert unsupported == []
    path = tmp_path / "janus.plugin.streaming.jcfg"
    save_mountpoint(path, config)
    text = path.read_text()
    assert 'type = "rtsp"' in text and 'url = "rtsp://127.0.0.1:8554/unicast"' in text and "rtsp_pwd" in text
    assert 'rtsp_transport = "tcp"' in text and "rtsp_tls_verify = false" in text
    assert mountpoints_from_file(load(path)) == [config]


@pytest.mark.parametrize(
    ("body", "code", "reason"),
    [
        ({}, 453, "Missing mandatory element (url)"),
        ({"url": 5}, 454, "Invalid element type (url should be a string)"),
        ({"url": "rtsp://cam/", "rtsp_failcheck": "no"}, 454, "Invalid element type (rtsp_failcheck should be a boolean)"),
        ({"url": "rtsp://cam/", "rtsp_transport": 1}, 454, "Invalid element type (rtsp_transport should be a string)"),
        ({"url": "rtsp://cam/", "video": False}, 456, "Can't add 'rtsp' stream, no audio or video have to be streamed..."),
    ],
)
def test_create_requests_are_checked_as_janus_checks_them(body: dict[str, Any], code: int, reason: str) -> None:
    request = {"request": "create", "type": "rtsp", "video": True} | body
    with pytest.raises(StreamingError) as error:
        mountpoint_from_create(request, ())
    assert (error.value.code, error.value.reason) == (code, reason)
