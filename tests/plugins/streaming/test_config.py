from typing import Any

import pytest
from fanout.plugins.streaming.config import DEFAULT_COLLISION_MS, MountpointConfigError, parse_mountpoint


def legacy(**overrides: Any) -> dict[str, Any]:
    group: dict[str, Any] = {
        "type": "rtp",
        "id": 1,
        "description": "Opus/VP8 live stream coming from external source",
        "audio": True,
        "audioport": 5002,
        "audiopt": 111,
        "audiocodec": "opus",
        "video": True,
        "videoport": 5004,
        "videopt": 100,
        "videocodec": "vp8",
        "secret": "adminpwd",
    }
    group.update(overrides)
    return group


def test_legacy_keys_make_audio_then_video_with_janus_mids() -> None:
    config, unsupported = parse_mountpoint("rtp-sample", legacy())
    assert unsupported == []
    assert config.id == 1
    assert config.name == "rtp-sample"
    assert config.secret == "adminpwd"
    audio, video = config.streams
    assert (audio.mindex, audio.kind, audio.mid, audio.label, audio.port, audio.payload_type) == (
        0, "audio", "a", "audio", 5002, 111,
    )
    assert audio.rtpmap == "opus/48000/2"
    assert (video.mindex, video.kind, video.mid, video.port, video.payload_type) == (1, "video", "v", 5004, 100)
    assert video.rtpmap == "VP8/90000"


def test_multistream_media_list() -> None:
    group = {
        "type": "rtp",
        "id": 123,
        "media": [
            {"type": "audio", "mid": "a", "label": "Audio stream", "port": 5102, "pt": 111, "codec": "opus"},
            {"type": "video", "mid": "v1", "port": 5104, "pt": 100, "codec": "vp8"},
            {"type": "video", "mid": "v2", "port": 5106, "pt": 100, "rtpmap": "VP8/90000"},
        ],
    }
    config, unsupported = parse_mountpoint("multistream-test", group)
    assert unsupported == []
    # as Janus: a stream without a label is labelled with its type
    assert [(s.mid, s.label, s.port) for s in config.streams] == [
        ("a", "Audio stream", 5102),
        ("v1", "video", 5104),
        ("v2", "video", 5106),
    ]


def test_h264_gets_a_browser_compatible_fmtp_by_default() -> None:
    config, _ = parse_mountpoint("h264", legacy(videocodec="h264"))
    assert config.streams[1].fmtp is not None
    assert "packetization-mode=1" in config.streams[1].fmtp


def test_unsupported_keys_are_reported_by_name() -> None:
    _, unsupported = parse_mountpoint("rtp-sample", legacy(videobufferkf=True, threads=2))
    assert unsupported == ["rtp-sample.videobufferkf", "rtp-sample.threads"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"type": None}, "mountpoint 'm': missing 'type'"),
        ({"type": "passive"},
         "mountpoint 'm': type 'passive' is not supported by fanout (only 'rtp', 'rtsp', 'live', 'ondemand', 'relay' and 'whip')"),
        ({"id": None}, "mountpoint 'm': missing 'id'"),
        ({"id": -3}, "mountpoint 'm': 'id' must be a positive integer"),
        ({"id": "one"}, "mountpoint 'm': 'id' must be an integer"),
        ({"audio": False, "video": False}, "mountpoint 'm': no streams (set audio/video/data = true or a 'media' list)"),
        ({"videoport": None}, "mountpoint 'm': missing 'videoport'"),
        ({"videoport": 70000}, "mountpoint 'm': 'videoport' must be a port number (0 picks a free one)"),
        ({"videopt": 200}, "mountpoint 'm': 'videopt' must be an RTP payload type (0-127)"),
        ({"videocodec": "mpeg2"}, "mountpoint 'm': unknown codec 'mpeg2'"),
        ({"videocodec": "opus"}, "mountpoint 'm': codec 'opus' is not a video codec"),
        ({"videocodec": None}, "mountpoint 'm': missing 'videocodec'"),
        ({"is_private": "maybe"}, "mountpoint 'm': 'is_private' must be true or false"),
    ],
)
def test_bad_definitions_are_refused_with_the_key(overrides: dict[str, Any], message: str) -> None:
    group = {key: value for key, value in legacy(**overrides).items() if value is not None}
    with pytest.raises(MountpointConfigError) as error:
        parse_mountpoint("m", group)
    assert str(error.value) == message


def test_media_entries_need_a_type_and_a_unique_mid() -> None:
    with pytest.raises(MountpointConfigError, match=r"media\[0\]: type must be 'audio', 'video' or 'data', not 'dada'"):
        parse_mountpoint("m", {"type": "rtp", "id": 1, "media": [{"type": "dada", "mid": "d", "port": 1}]})
    with pytest.raises(MountpointConfigError, match="duplicate mid 'v'"):
        stream = {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"}
        parse_mountpoint("m", {"type": "rtp", "id": 1, "media": [stream, dict(stream)]})


def test_rtcp_ports_in_both_forms() -> None:
    legacy, _ = parse_mountpoint(
        "legacy",
        {"type": "rtp", "id": 5, "video": True, "videoport": 5004, "videortcpport": 5005, "videopt": 96, "videocodec": "vp8"},
    )
    assert legacy.streams[0].rtcp_port == 5005
    media, _ = parse_mountpoint(
        "media",
        {"type": "rtp", "id": 6, "media": [{"type": "video", "mid": "v", "port": 0, "rtcpport": 0, "pt": 96, "codec": "vp8"}]},
    )
    assert media.streams[0].rtcp_port == 0
    with pytest.raises(MountpointConfigError, match="'rtcpport' must be a port number"):
        parse_mountpoint(
            "bad",
            {"type": "rtp", "id": 7, "media": [{"type": "video", "mid": "v", "port": 0, "rtcpport": 70000, "pt": 96, "codec": "vp8"}]},
        )


def test_multicast_groups_and_interfaces() -> None:
    entry = {"type": "video", "mid": "v", "port": 5004, "pt": 96, "codec": "vp8"}
    joined, _ = parse_mountpoint("m", {"type": "rtp", "id": 8, "media": [entry | {"mcast": "239.1.2.3", "iface": "lo"}]})
    assert (joined.streams[0].host, joined.streams[0].multicast_interface) == ("239.1.2.3", "127.0.0.1")
    bound, _ = parse_mountpoint("m", {"type": "rtp", "id": 9, "media": [entry | {"iface": "127.0.0.1"}]})
    assert (bound.streams[0].host, bound.streams[0].multicast_interface) == ("127.0.0.1", None)
    with pytest.raises(MountpointConfigError, match="'mcast' must be a multicast address"):
        parse_mountpoint("m", {"type": "rtp", "id": 10, "media": [entry | {"mcast": "10.0.0.1"}]})
    with pytest.raises(MountpointConfigError, match="'iface' names no interface"):
        parse_mountpoint("m", {"type": "rtp", "id": 11, "media": [entry | {"iface": "no-such-interface0"}]})


SPROP_PARAMETER_SETS = "Z0IAKeKQCgDLYC3AQEBpB4kRUA==,aM48gA=="  # an SPS and a PPS, as a camera's SDP gives them


def test_source_options_in_the_legacy_form() -> None:
    config, unsupported = parse_mountpoint(
        "m",
        legacy(videocodec="h264", collision=2000, srtpsuite=32, srtpcrypto="WbTBosdVUZqEb6Htqhn+m3z7wUh4RJVR8nE15GbN",
               audioskew=True, h264sps=SPROP_PARAMETER_SETS),
    )  # fmt: skip
    assert unsupported == []
    assert config.collision_ms == 2000
    assert config.srtp is not None
    assert (config.srtp.profile, len(config.srtp.master_key)) == ("AES_CM_128_HMAC_SHA1_32", 30)
    audio, video = config.streams
    assert (audio.skew, video.skew) == (True, False)
    assert (audio.h264sps, video.h264sps) == (None, SPROP_PARAMETER_SETS)


def test_source_options_in_media_entries() -> None:
    entry = {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "h264", "skew": True,
             "h264sps": SPROP_PARAMETER_SETS}  # fmt: skip
    config, unsupported = parse_mountpoint("m", {"type": "rtp", "id": 1, "media": [entry]})
    assert unsupported == []
    assert (config.streams[0].skew, config.streams[0].h264sps) == (True, SPROP_PARAMETER_SETS)
    assert (config.collision_ms, config.srtp) == (DEFAULT_COLLISION_MS, None)


def test_streams_are_locked_to_their_ssrc_unless_collision_is_set_to_zero() -> None:
    """Janus's collision is off unless set; fanout locks by default (a restarted encoder's new
    SSRC takes over after half a second of silence), and ``collision = 0`` turns it off."""
    entry = {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"}
    assert parse_mountpoint("m", {"type": "rtp", "id": 1, "media": [entry]})[0].collision_ms == 500
    assert parse_mountpoint("m", {"type": "rtp", "id": 1, "collision": 0, "media": [entry]})[0].collision_ms == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"collision": -1}, "'collision' must be a time in milliseconds (0 disables it)"),
        ({"srtpsuite": 64, "srtpcrypto": "WbTBosdVUZqEb6Htqhn+m3z7wUh4RJVR8nE15GbN"}, "'srtpsuite' must be 32 or 80"),
        ({"srtpsuite": 80}, "'srtpsuite' needs 'srtpcrypto' (the base64 master key and salt)"),
        ({"srtpcrypto": "WbTBosdVUZqEb6Htqhn+m3z7wUh4RJVR8nE15GbN"}, "'srtpsuite' must be 32 or 80"),
        ({"srtpsuite": 80, "srtpcrypto": "c2hvcnQ="}, "'srtpcrypto' must be the base64 of a 30-byte master key"),
        ({"srtpsuite": 80, "srtpcrypto": "not base64!"}, "'srtpcrypto' must be the base64 of a 30-byte master key"),
        ({"h264sps": SPROP_PARAMETER_SETS}, "'h264sps' is for H.264 streams, not vp8"),
        ({"videocodec": "h264", "h264sps": "aM48gA=="}, "'h264sps' must be a sprop-parameter-sets value"),
        ({"videocodec": "h264", "h264sps": "Z0IAKe==,,"}, "'h264sps' must be a sprop-parameter-sets value"),
        ({"videoskew": "sometimes"}, "'videoskew' must be true or false"),
    ],
)
def test_bad_source_options_are_refused_with_the_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(MountpointConfigError) as error:
        parse_mountpoint("m", legacy(**overrides))
    assert message in str(error.value)


def test_playoutdelay_ext_is_a_mountpoint_key_in_both_forms() -> None:
    assert not parse_mountpoint("m", legacy())[0].playoutdelay_ext
    config, unsupported = parse_mountpoint("m", legacy(playoutdelay_ext=True))
    assert unsupported == []
    assert config.playoutdelay_ext
    media_form = {
        "type": "rtp",
        "id": 2,
        "playoutdelay_ext": "true",  # as a .jcfg may write it
        "media": [{"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"}],
    }
    config, unsupported = parse_mountpoint("m", media_form)
    assert unsupported == []
    assert config.playoutdelay_ext
    with pytest.raises(MountpointConfigError, match="'playoutdelay_ext' must be true or false"):
        parse_mountpoint("m", legacy(playoutdelay_ext=3))


def test_legacy_data_keys_add_a_data_stream_after_audio_and_video() -> None:
    config, unsupported = parse_mountpoint(
        "data-example", legacy(data=True, dataport=5008, datatype="binary", databuffermsg=True, dataiface="127.0.0.1")
    )
    assert unsupported == []
    assert config.data is not None
    assert (config.data.mindex, config.data.mid, config.data.port, config.data.host) == (2, "d", 5008, "127.0.0.1")
    assert (config.data.datatype, config.data.buffer_message) == ("binary", True)


def test_a_data_only_mountpoint_as_in_janus_sample() -> None:
    group = {"type": "rtp", "id": 15, "audio": False, "video": False, "data": True, "dataport": 5008, "datatype": "text"}
    config, unsupported = parse_mountpoint("data-example", group)
    assert unsupported == [] and config.streams == ()
    assert config.data is not None
    assert (config.data.mindex, config.data.datatype, config.data.buffer_message) == (0, "text", False)


def test_a_data_entry_in_the_media_list_keeps_its_place() -> None:
    group = {
        "type": "rtp",
        "id": 1,
        "media": [
            {"type": "data", "mid": "subtitles", "label": "Subtitles", "port": 0, "buffermsg": True},
            {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"},
        ],
    }
    config, unsupported = parse_mountpoint("m", group)
    assert unsupported == []
    assert config.data is not None
    assert (config.data.mindex, config.data.mid, config.data.label) == (0, "subtitles", "Subtitles")
    assert (config.data.datatype, config.data.buffer_message) == ("text", True)
    assert config.streams[0].mindex == 1


@pytest.mark.parametrize(
    ("group", "message"),
    [
        (legacy(data=True), "mountpoint 'm': missing 'dataport'"),
        (legacy(data=True, dataport=70000), "mountpoint 'm': 'dataport' must be a port number (0 picks a free one)"),
        (legacy(data=True, dataport=1, datatype="json"), "mountpoint 'm': 'datatype' must be 'text' or 'binary', not 'json'"),
        (legacy(data=True, dataport=1, databuffermsg="often"), "mountpoint 'm': 'databuffermsg' must be true or false"),
        (legacy(data="yes please"), "mountpoint 'm': 'data' must be true or false"),
        (
            {"type": "rtp", "id": 1, "media": [{"type": "data", "mid": "d", "port": 1, "datatype": 3}]},
            "mountpoint 'm': media[0]: 'datatype' must be a string",
        ),
        (
            {"type": "rtp", "id": 1, "media": [{"type": "data", "mid": "d", "port": 1, "buffermsg": "no!"}]},
            "mountpoint 'm': media[0]: 'buffermsg' must be true or false",
        ),
        (
            {"type": "rtp", "id": 1, "media": [{"type": "data", "port": 1}]},
            "mountpoint 'm': media[0]: missing 'mid'",
        ),
        (
            {"type": "rtp", "id": 1, "media": [{"type": "data", "mid": "d", "port": 1}, {"type": "data", "mid": "e", "port": 2}]},
            "mountpoint 'm': media[1]: a mountpoint has at most one data stream",
        ),
    ],
)
def test_bad_data_streams_are_refused_with_the_key(group: dict[str, Any], message: str) -> None:
    with pytest.raises(MountpointConfigError) as error:
        parse_mountpoint("m", group)
    assert str(error.value) == message


def test_simulcast_in_the_legacy_form() -> None:
    config, unsupported = parse_mountpoint(
        "simulcast", legacy(videosimulcast=True, videoport2=5006, videoport3="5008")
    )
    assert unsupported == []
    audio, video = config.streams
    assert (audio.simulcast, audio.substreams) == (False, 1)
    assert (video.simulcast, video.port, video.substream_ports, video.substreams) == (True, 5004, (5006, 5008), 3)


def test_janus_vp9_svc_switch_is_taken_for_vp9_and_refused_for_other_codecs() -> None:
    config, unsupported = parse_mountpoint("svc", legacy(videocodec="vp9", videosvc=True))
    assert unsupported == []
    assert config.streams[1].codec.name == "vp9" and config.streams[1].svc
    assert not parse_mountpoint("plain", legacy(videocodec="vp9"))[0].streams[1].svc
    with pytest.raises(MountpointConfigError) as error:
        parse_mountpoint("svc", legacy(videosvc=True))
    assert str(error.value) == "mountpoint 'svc': 'videosvc' is for VP9 video streams, not vp8"
    group = {"type": "rtp", "id": 5, "media": [{"type": "video", "mid": "v", "port": 5104, "pt": 100, "codec": "vp9",
                                                "svc": True}]}  # fmt: skip
    assert parse_mountpoint("svc", group)[1] == []


def test_simulcast_in_media_entries() -> None:
    group = {
        "type": "rtp",
        "id": 5,
        "media": [
            {"type": "video", "mid": "v", "port": 5104, "pt": 100, "codec": "vp8", "simulcast": True, "port2": 5106},
            {"type": "video", "mid": "w", "port": 5110, "pt": 100, "codec": "vp8", "port2": 5112},
        ],
    }
    config, unsupported = parse_mountpoint("simulcast", group)
    assert unsupported == []
    simulcast, plain = config.streams
    assert (simulcast.substream_ports, simulcast.substreams) == ((5106, 0), 3), "as Janus: port3 is any free port"
    assert (plain.simulcast, plain.substream_ports) == (False, ()), "port2 without simulcast means nothing"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"videosimulcast": True, "videoport2": 70000}, "'videoport2' must be a port number"),
        ({"videosimulcast": True, "videoport2": 5006, "videocodec": "vp9"}, "keyframes fanout finds"),
        ({"videosimulcast": "maybe", "videoport2": 5006}, "'videosimulcast' must be true or false"),
    ],
)
def test_bad_simulcast_definitions_are_refused_with_the_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(MountpointConfigError, match=message):
        parse_mountpoint("simulcast", legacy(**overrides))


def test_simulcast_without_substream_ports_takes_free_ones_as_janus() -> None:
    config, _ = parse_mountpoint("simulcast", legacy(videosimulcast=True))
    assert config.streams[1].substream_ports == (0, 0)


def test_audio_has_no_simulcast_keys() -> None:
    _, unsupported = parse_mountpoint("simulcast", legacy(audiosimulcast=True, audioport2=5010))
    assert unsupported == ["simulcast.audiosimulcast", "simulcast.audioport2"]
