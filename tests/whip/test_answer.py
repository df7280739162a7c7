"""fanout's answer to a publisher's offer, as the publisher reads it."""

from __future__ import annotations

from pathlib import Path

from fanout.webrtc.sdp import Candidate, TransportDescription, parse_description
from fanout.whip.answer import build_answer, ice_restart_fragment
from fanout.whip.offer import read_offer
from tests.whip.test_offer import whip_mountpoint

DATA = Path(__file__).parent / "data"
TRANSPORT = TransportDescription(
    ice_ufrag="srvu",
    ice_pwd="serverpassword0123456789",
    fingerprint=("sha-256", "AB:" * 31 + "CD"),
    setup="passive",
    candidates=[Candidate("1", 1, "udp", 2130706431, "127.0.0.1", 10000, "host"), Candidate("2", 1, "udp", 2130706175, "10.0.0.5", 10000, "host")],
)


def answer_to(name: str, simulcast: bool = False) -> str:
    video = {"type": "video", "mid": "v", "codec": "h264", "pt": 101, "simulcast": simulcast}
    offer = read_offer((DATA / name).read_text(), whip_mountpoint(video).streams)
    return build_answer(offer, TRANSPORT, session_id=42, session_version=1)


def test_the_answer_to_obs_is_ice_lite_passive_recvonly_with_every_candidate() -> None:
    text = answer_to("obs_h264_opus.sdp")
    answer = parse_description(text)

    assert answer.ice_lite and answer.setup == "passive" and answer.end_of_candidates
    assert [(c.ip, c.port) for c in answer.candidates] == [("127.0.0.1", 10000), ("10.0.0.5", 10000)]
    assert [(m.mid, m.kind, m.direction) for m in answer.media] == [("0", "audio", "recvonly"), ("1", "video", "recvonly")]
    audio, video = answer.media
    assert [(c.payload_type, c.name, c.fmtp) for c in audio.codecs] == [(111, "opus", "stereo=1;useinbandfec=1")]
    assert [(c.payload_type, c.name) for c in video.codecs] == [(96, "H264")]
    assert video.codecs[0].rtcp_feedback == ("nack", "nack pli", "goog-remb")
    assert "a=group:BUNDLE 0 1\r\n" in text
    assert "a=ssrc" not in text  # fanout sends nothing to a publisher but RTCP


def test_the_answer_accepts_every_simulcast_layer_without_rtx() -> None:
    text = answer_to("obs_simulcast.sdp", simulcast=True)

    assert "a=rid:0 recv\r\na=rid:1 recv\r\na=rid:2 recv\r\na=simulcast:recv 0;1;2\r\n" in text
    assert "rtx" not in text and "transport-cc" not in text and "repaired" not in text
    video = parse_description(text).media[1]
    assert video.header_extensions == (
        (1, "urn:ietf:params:rtp-hdrext:sdes:mid"),
        (2, "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
    )


def test_a_rejected_m_line_gets_port_0_and_stays_out_of_the_bundle() -> None:
    text = (DATA / "obs_h264_opus.sdp").read_text().replace("a=mid:0\na=sendonly", "a=mid:0\na=recvonly")
    offer = read_offer(text, whip_mountpoint().streams)
    answer = build_answer(offer, TRANSPORT, session_id=42, session_version=1)

    assert "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\n" in answer
    assert "a=group:BUNDLE 1\r\n" in answer


def test_the_ice_restart_fragment_has_the_new_credentials_and_candidates() -> None:
    offer = read_offer((DATA / "obs_h264_opus.sdp").read_text(), whip_mountpoint().streams)
    fragment = ice_restart_fragment(offer, TRANSPORT)

    assert fragment.startswith("a=ice-lite\r\na=ice-ufrag:srvu\r\na=ice-pwd:serverpassword0123456789\r\n")
    assert "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 10000 typ host\r\n" in fragment
    assert fragment.endswith("a=end-of-candidates\r\n")
