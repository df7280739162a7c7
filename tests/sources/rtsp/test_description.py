from __future__ import annotations

from pathlib import Path

import pytest
from fanout.sources.rtsp.description import (
    RtspDescriptionError,
    base_url,
    parse_tracks,
    path_only,
    resolve_control,
    split_credentials,
)
from fanout.sources.rtsp.messages import RtspError, RtspResponse

DATA = Path(__file__).parent / "data"


def test_gstreamers_h264_track_with_its_parameter_sets_and_control_url() -> None:
    response = RtspResponse.parse((DATA / "gstreamer_describe.txt").read_bytes())
    (track,) = parse_tracks(response.body.decode(), base_url("rtsp://127.0.0.1:18555/stream", response))
    assert (track.kind, track.payload_type, track.rtpmap) == ("video", 96, "H264/90000")
    assert track.fmtp_parameter("sprop-parameter-sets") == "Z0LADdoFB+wFqDAwNSgAAAMACAAAAwHkeKFV,aM48gA=="
    assert track.fmtp_parameter("packetization-mode") == "1"
    assert track.control_url == "rtsp://127.0.0.1:18555/stream/stream=0"


@pytest.mark.parametrize(
    ("base", "control", "url"),
    [
        ("rtsp://cam/live/", "trackID=1", "rtsp://cam/live/trackID=1"),
        ("rtsp://cam/live", "trackID=1", "rtsp://cam/live/trackID=1"),  # as if the base were a folder
        ("rtsp://cam/live/", "*", "rtsp://cam/live/"),
        ("rtsp://cam/live/", None, "rtsp://cam/live/"),
        ("rtsp://cam/live/", "rtsp://other:8554/x/track1", "rtsp://other:8554/x/track1"),
        ("rtsp://cam:8554/a/b/", "/root/track", "rtsp://cam:8554/root/track"),
    ],
)
def test_control_urls_resolve_against_the_base(base: str, control: str | None, url: str) -> None:
    assert resolve_control(base, control) == url


def test_the_base_is_content_base_then_content_location_then_the_request_url() -> None:
    def response(*headers: tuple[str, str]) -> RtspResponse:
        return RtspResponse(200, "OK", (("CSeq", "2"), *headers))

    assert base_url("rtsp://cam/a", response(("Content-Base", "rtsp://cam/b/"), ("Content-Location", "rtsp://cam/c/"))) == "rtsp://cam/b/"
    assert base_url("rtsp://cam/a", response(("Content-Location", "rtsp://cam/c/"))) == "rtsp://cam/c/"
    assert base_url("rtsp://cam/a", response()) == "rtsp://cam/a"


def test_a_session_level_control_is_the_base_of_the_tracks() -> None:
    sdp = "v=0\r\na=control:rtsp://cam/session/\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=control:v\r\n"
    (track,) = parse_tracks(sdp, "rtsp://cam/ignored/")
    assert track.control_url == "rtsp://cam/session/v"


def test_an_audio_and_a_video_track_a_static_payload_type_needs_no_rtpmap() -> None:
    sdp = (
        "v=0\nm=audio 0 RTP/AVP 0\na=control:track1\n"
        "m=video 0 RTP/AVP 97 96\na=rtpmap:96 H264/90000\na=rtpmap:97 VP8/90000\na=control:track2\n"
    )
    audio, video = parse_tracks(sdp, "rtsp://cam/")
    assert (audio.kind, audio.rtpmap, audio.control_url) == ("audio", "PCMU/8000/1", "rtsp://cam/track1")
    assert (video.payload_type, video.rtpmap) == (97, "VP8/90000")  # the server's first choice


@pytest.mark.parametrize(
    ("sdp", "reason"),
    [
        ("v=0\r\ns=nothing\r\n", "no m-line"),
        ("v=0\r\nm=video\r\n", "invalid m-line"),
        ("v=0\r\nm=video 0 RTP/AVP 96\r\n", "has no a=rtpmap"),
        ("v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8\r\n", "invalid a=rtpmap"),
        ("v=0\r\nthis is not sdp\r\n", "not <type>=<value>"),
    ],
)
def test_unusable_sdp_is_refused_with_the_reason(sdp: str, reason: str) -> None:
    with pytest.raises(RtspDescriptionError, match=reason):
        parse_tracks(sdp, "rtsp://cam/")


def test_credentials_in_the_url_are_taken_out_of_it() -> None:
    assert split_credentials("rtsp://admin:p%40ss@10.0.0.9:554/h264") == ("rtsp://10.0.0.9:554/h264", "admin", "p@ss")
    assert split_credentials("rtsp://cam/live") == ("rtsp://cam/live", None, None)
    with pytest.raises(RtspError, match="not an rtsp:// URL"):
        split_credentials("http://cam/live")


def test_the_quirk_describes_the_path_only() -> None:
    assert path_only("rtsp://cam:554/live/main?x=1") == "/live/main?x=1"
