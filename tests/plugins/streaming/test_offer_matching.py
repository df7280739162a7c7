"""Matching a client's offer to a mountpoint's streams."""

from __future__ import annotations

from fanout.config.jcfg import parse
from fanout.plugins.streaming.config import parse_mountpoint
from fanout.plugins.streaming.offer_matching import data_mline, match_offer
from fanout.webrtc.sdp import parse_description

MOUNTPOINT, _ = parse_mountpoint(
    "m",
    parse(
        """type = "rtp"
id = 1
media = (
    { type = "audio", mid = "a", port = 0, pt = 111, codec = "opus" },
    { type = "video", mid = "v", port = 0, pt = 96, codec = "h264" }
)
"""
    ),
)

TRANSPORT = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"


def offer(*sections: str) -> str:
    return "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" + "".join(sections)


def video(mid: str, direction: str = "recvonly", port: int = 9) -> str:
    return (
        f"m=video {port} UDP/TLS/RTP/SAVPF 102 104 106\r\n{TRANSPORT}a=mid:{mid}\r\na={direction}\r\n"
        "a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n"
        "a=rtpmap:104 H264/90000\r\na=fmtp:104 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f\r\n"
        "a=rtpmap:106 H264/90000\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
        "a=rtcp-fb:106 nack\r\na=rtcp-fb:106 nack pli\r\na=rtcp-fb:106 goog-remb\r\na=rtcp-fb:106 transport-cc\r\n"
    )


def audio(mid: str) -> str:
    return f"m=audio 9 UDP/TLS/RTP/SAVPF 109\r\n{TRANSPORT}a=mid:{mid}\r\na=recvonly\r\na=rtpmap:109 opus/48000/2\r\n"


def data(mid: str) -> str:
    return f"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n{TRANSPORT}a=mid:{mid}\r\n"


def test_each_offered_line_gets_its_kind_on_the_clients_payload_type() -> None:
    video_track, audio_track, data_track = match_offer(
        parse_description(offer(video("0"), audio("1"), data("2"))), MOUNTPOINT.streams
    )
    assert data_track is None
    assert audio_track is not None and (audio_track.mid, audio_track.payload_type) == ("1", 109)
    assert video_track is not None and (video_track.mid, video_track.payload_type) == ("0", 106)
    assert video_track.rtcp_feedback == ("nack", "nack pli")  # what fanout answers, of what was offered


def test_lines_that_cannot_receive_or_are_rejected_get_nothing() -> None:
    tracks = match_offer(
        parse_description(offer(video("0", direction="sendonly"), video("1", port=0), video("2"))), MOUNTPOINT.streams
    )
    assert [track.mid if track else None for track in tracks] == [None, None, "2"]


def test_a_stream_is_sent_on_one_line_only() -> None:
    first, second = match_offer(parse_description(offer(audio("x"), audio("y"))), MOUNTPOINT.streams)
    assert first is not None and first.stream.kind == "audio"
    assert second is None


PLAYOUT_DELAY = "a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay\r\n"


def test_a_client_offering_the_playout_delay_gets_it_when_the_mountpoint_enables_it() -> None:
    description = parse_description(offer(video("0") + PLAYOUT_DELAY, audio("1") + PLAYOUT_DELAY))
    video_track, audio_track = match_offer(description, MOUNTPOINT.streams, playoutdelay_ext=True)
    assert video_track is not None and video_track.playout_delay_extension_id == 7
    assert video_track.offer_media().header_extensions == ((7, "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"),)
    assert audio_track is not None and audio_track.playout_delay_extension_id is None  # video only, as Janus
    video_track, _ = match_offer(description, MOUNTPOINT.streams)
    assert video_track is not None and video_track.playout_delay_extension_id is None
    assert video_track.offer_media().header_extensions == ()


def test_a_two_byte_header_id_is_not_taken() -> None:
    description = parse_description(offer(video("0") + PLAYOUT_DELAY.replace(":7 ", ":20 ")))
    (video_track,) = match_offer(description, MOUNTPOINT.streams, playoutdelay_ext=True)
    assert video_track is not None and video_track.playout_delay_extension_id is None


def test_the_first_usable_application_line_carries_the_data_stream() -> None:
    assert data_mline(parse_description(offer(video("0"), audio("1"), data("2")))) == 2
    assert data_mline(parse_description(offer(video("0"), audio("1")))) is None
    rejected = data("9").replace("m=application 9 ", "m=application 0 ")
    assert data_mline(parse_description(offer(rejected, data("3")))) == 1
