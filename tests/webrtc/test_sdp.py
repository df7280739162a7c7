import asyncio
from pathlib import Path

import pytest

from fanout.webrtc.sdp import (
    Candidate,
    Codec,
    PLAYOUT_DELAY_URI,
    OfferMedia,
    SessionDescription,
    MediaDescription,
    SdpError,
    TransportDescription,
    build_answer,
    build_offer,
    parse_description,
)
from tests.webrtc.real_answers import SAMPLE_FINGERPRINT, aiortc_answer, chromium_answer, sample_offer

DATA = Path(__file__).parent / "data"

EXPECTED_OFFER = f"""v=0
o=- 1234567890 1 IN IP4 0.0.0.0
s=fanout
t=0 0
a=group:BUNDLE a v
a=ice-lite
a=msid-semantic: WMS *
m=audio 10000 UDP/TLS/RTP/SAVPF 111
c=IN IP4 127.0.0.1
a=ice-ufrag:fNoU
a=ice-pwd:fanoutIcePasswordOf24ch
a=fingerprint:sha-256 {SAMPLE_FINGERPRINT}
a=setup:actpass
a=mid:a
a=sendonly
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=msid:fanout fanout-a
a=ssrc:1111 cname:fanout
a=ssrc:1111 msid:fanout fanout-a
a=candidate:1 1 udp 2130706431 127.0.0.1 10000 typ host
a=end-of-candidates
m=video 10000 UDP/TLS/RTP/SAVPF 96
c=IN IP4 127.0.0.1
a=ice-ufrag:fNoU
a=ice-pwd:fanoutIcePasswordOf24ch
a=fingerprint:sha-256 {SAMPLE_FINGERPRINT}
a=setup:actpass
a=mid:v
a=sendonly
a=rtcp-mux
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 goog-remb
a=msid:fanout fanout-v
a=ssrc:2222 cname:fanout
a=ssrc:2222 msid:fanout fanout-v
a=candidate:1 1 udp 2130706431 127.0.0.1 10000 typ host
a=end-of-candidates
"""

OPUS = Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1")
TRANSPORT = TransportDescription("fNoU", "fanoutIcePasswordOf24ch", ("sha-256", SAMPLE_FINGERPRINT), "actpass", [])


def test_offer_line_by_line() -> None:
    offer = sample_offer()
    assert offer.endswith("\r\n") and "\n" not in offer.replace("\r\n", "")
    assert offer.split("\r\n") == EXPECTED_OFFER.split("\n")


def test_offer_without_candidates_and_with_a_data_channel() -> None:
    media = [OfferMedia("0", "audio", OPUS, ssrc=7, track_id="mic"), OfferMedia("1", "application", None, ssrc=0)]
    lines = build_offer(media, TRANSPORT, session_id=1, session_version=2).split("\r\n")
    assert lines[4] == "a=group:BUNDLE 0 1"
    assert lines[7:9] == ["m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0"]
    assert "a=ssrc:7 msid:fanout mic" in lines
    application = lines.index("m=application 9 UDP/DTLS/SCTP webrtc-datachannel")
    assert lines[application + 1 :] == [
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:fNoU",
        "a=ice-pwd:fanoutIcePasswordOf24ch",
        f"a=fingerprint:sha-256 {SAMPLE_FINGERPRINT}",
        "a=setup:actpass",
        "a=mid:1",
        "a=sctp-port:5000",
        "a=max-message-size:262144",
        "a=end-of-candidates",
        "",
    ]


def test_offer_needs_media_and_codecs() -> None:
    with pytest.raises(ValueError, match="at least one m-line"):
        build_offer([], TRANSPORT, session_id=1, session_version=1)
    with pytest.raises(ValueError, match="m-line 0: video needs a codec"):
        build_offer([OfferMedia("0", "video", None, ssrc=1)], TRANSPORT, session_id=1, session_version=1)


def test_candidate() -> None:
    text = "candidate:3918540296 1 udp 2113937151 192.0.2.2 45100 typ host generation 0 network-cost 999"
    candidate = Candidate.parse(text)
    assert candidate == Candidate("3918540296", 1, "udp", 2113937151, "192.0.2.2", 45100, "host")
    assert Candidate.parse("a=" + text) == candidate
    assert str(candidate) == "candidate:3918540296 1 udp 2113937151 192.0.2.2 45100 typ host"
    srflx = Candidate.parse("candidate:2 1 UDP 1686052607 203.0.113.9 6000 typ srflx raddr 192.0.2.2 rport 45100")
    assert (srflx.type, srflx.related_address, srflx.related_port) == ("srflx", "192.0.2.2", 45100)
    assert str(srflx) == "candidate:2 1 UDP 1686052607 203.0.113.9 6000 typ srflx raddr 192.0.2.2 rport 45100"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("candidate:1 1 udp 5 127.0.0.1 9", "bad candidate 'candidate:1 1 udp 5 127.0.0.1 9'"),
        ("candidate:1 1 udp 5 127.0.0.1 9 host x", "bad candidate 'candidate:1 1 udp 5 127.0.0.1 9 host x'"),
        ("candidate:1 x udp 5 127.0.0.1 9 typ host", "bad candidate 'candidate:1 x udp 5 127.0.0.1 9 typ host': "),
        (
            "candidate:1 1 udp 5 127.0.0.1 70000 typ host",
            "bad candidate 'candidate:1 1 udp 5 127.0.0.1 70000 typ host': port 70000",
        ),
    ],
)
def test_bad_candidate(text: str, reason: str) -> None:
    with pytest.raises(SdpError) as error:
        Candidate.parse(text)
    assert str(error.value).startswith(reason)


def test_chromium_answer() -> None:
    """Chromium 156 answering sample_offer(), as janus.js sends it: no candidates (they are trickled)."""
    description = parse_description((DATA / "answer_chromium.sdp").read_text())
    fingerprint = "E0:ED:3B:3A:82:00:EB:C9:94:94:BB:72:71:9C:02:85:EC:8E:B7:EE:65:B7:8F:BB:B9:D2:7E:86:92:B8:66:ED"
    assert description == SessionDescription(
        ice_ufrag="VDIG",
        ice_pwd="gbM+iw0QTUAgPwZzr3AxIr79",
        fingerprints=[("sha-256", fingerprint)],
        setup="active",
        media=[
            MediaDescription("a", "audio", 9, "recvonly", [OPUS]),
            MediaDescription(
                "v",
                "video",
                9,
                "recvonly",
                [Codec(96, "VP8", 90000, rtcp_feedback=("goog-remb", "ccm fir", "nack", "nack pli"))],
            ),
        ],
        candidates=[],
        end_of_candidates=False,
        ice_lite=False,
    )


def test_chromium_answer_after_gathering() -> None:
    description = parse_description((DATA / "answer_chromium_complete.sdp").read_text())
    assert description.candidates == [
        Candidate("3918540296", 1, "udp", 2113937151, "192.0.2.2", 45100, "host"),
        Candidate("586608616", 1, "udp", 2113942271, "fd00::2", 56146, "host"),
    ]
    assert description.media[0].port == 45100


def test_aiortc_answer() -> None:
    """aiortc 1.16: candidates and end-of-candidates inside the answer, three fingerprints, no ccm fir."""
    description = parse_description((DATA / "answer_aiortc.sdp").read_text())
    assert (description.ice_ufrag, description.ice_pwd, description.setup) == (
        "iLP5",
        "3q03k6nkOS1471O62pmbRc",
        "active",
    )
    assert [algorithm for algorithm, _ in description.fingerprints] == ["sha-256", "sha-384", "sha-512"]
    assert description.fingerprints[0][1].startswith("2F:A7:8B:86")
    assert [(c.ip, c.port) for c in description.candidates] == [("192.0.2.2", 34407), ("fd00::2", 47386)]
    assert description.end_of_candidates
    assert [(m.mid, m.kind, m.port, m.direction) for m in description.media] == [
        ("a", "audio", 34407, "recvonly"),
        ("v", "video", 34407, "recvonly"),
    ]
    assert description.media[0].codecs == [Codec(111, "opus", 48000, 2)]
    assert description.media[1].codecs == [Codec(96, "VP8", 90000, rtcp_feedback=("nack", "nack pli", "goog-remb"))]


def test_ssrcs_of_each_m_line() -> None:
    """aiortc announces an SSRC on each m-line of its answer; Chromium's answer has none."""
    aiortc = parse_description((DATA / "answer_aiortc.sdp").read_text())
    assert [m.ssrcs for m in aiortc.media] == [(4251122264,), (4091306657,)]
    chromium = parse_description((DATA / "answer_chromium.sdp").read_text())
    assert [m.ssrcs for m in chromium.media] == [(), ()]


def test_unreadable_ssrc_lines_are_skipped() -> None:
    lines = "a=ssrc:12 cname:x\na=ssrc:12 msid:s t\na=ssrc:x cname:x\na=ssrc:4294967296 cname:x\na=ssrc:34\n"
    media = parse_description(SESSION_LEVEL.replace("a=mid:1\n", "a=mid:1\n" + lines)).media
    assert [m.ssrcs for m in media] == [(), (12, 34)]


def test_offer_read_back() -> None:
    """What build_offer writes, parse_description reads back as it was built."""
    description = parse_description(sample_offer())
    assert (description.ice_ufrag, description.ice_pwd, description.setup) == ("fNoU", "fanoutIcePasswordOf24ch", "actpass")
    assert description.fingerprints == [("sha-256", SAMPLE_FINGERPRINT)]
    assert description.ice_lite and description.end_of_candidates
    assert description.candidates == [Candidate("1", 1, "udp", 2130706431, "127.0.0.1", 10000, "host")]
    assert description.media == [
        MediaDescription("a", "audio", 10000, "sendonly", [OPUS], ssrcs=(1111,)),
        MediaDescription(
            "v",
            "video",
            10000,
            "sendonly",
            [Codec(96, "VP8", 90000, rtcp_feedback=("nack", "nack pli", "ccm fir", "goog-remb"))],
            ssrcs=(2222,),
        ),
    ]


def test_answer_read_back_with_a_rejected_m_line() -> None:
    """An answer to Chromium's captured SDP that sends video and rejects audio."""
    offer = parse_description((DATA / "answer_chromium_playout_delay.sdp").read_text())
    video = OfferMedia("v", "video", Codec(96, "VP8", 90000), ssrc=9, header_extensions=((12, PLAYOUT_DELAY_URI),))
    transport = TransportDescription("fNoU", "fanoutIcePasswordOf24ch", ("sha-256", SAMPLE_FINGERPRINT), "passive", [])
    answer = parse_description(build_answer(offer, [None, video], transport, session_id=1, session_version=3))
    assert answer.setup == "passive"
    assert [(m.mid, m.kind, m.port, m.direction, m.ssrcs) for m in answer.media] == [
        ("a", "audio", 0, "inactive", ()),
        ("v", "video", 9, "sendonly", (9,)),
    ]
    assert answer.media[1].header_extensions == ((12, PLAYOUT_DELAY_URI),)


def test_chromium_accepts_the_offer_live() -> None:
    result = chromium_answer(sample_offer())
    assert result["tracks"] == [["a", "audio", "recvonly"], ["v", "video", "recvonly"]]
    description = parse_description(str(result["answer"]))
    assert description.setup == "active"
    assert [m.mid for m in description.media] == ["a", "v"]


def test_aiortc_accepts_the_offer_live() -> None:
    description = parse_description(asyncio.run(aiortc_answer(sample_offer())))
    assert description.setup == "active"
    assert [m.direction for m in description.media] == ["recvonly", "recvonly"]


SESSION_LEVEL = """v=0
o=mozilla...THIS_IS_SDPARTA 1 0 IN IP4 0.0.0.0
s=-
t=0 0
a=fingerprint:sha-256 AA:BB
a=ice-options:trickle
a=msid-semantic:WMS *
a=ice-ufrag:sess
a=ice-pwd:session-level-password
a=setup:passive
m=video 9 UDP/TLS/RTP/SAVPF 96 0
c=IN IP4 0.0.0.0
a=inactive
a=rtpmap:96 VP8/90000
a=rtcp-fb:* nack
a=candidate:0 1 UDP 2122252543 abcd-1234.local 54321 typ host
m=audio 0 UDP/TLS/RTP/SAVPF 0
a=mid:1
"""


def test_session_level_transport_and_wildcard_feedback() -> None:
    description = parse_description(SESSION_LEVEL)
    assert (description.ice_ufrag, description.ice_pwd, description.setup) == (
        "sess",
        "session-level-password",
        "passive",
    )
    assert description.fingerprints == [("sha-256", "AA:BB")]
    assert description.media == [
        MediaDescription(
            None,
            "video",
            9,
            "inactive",
            [Codec(96, "VP8", 90000, rtcp_feedback=("nack",)), Codec(0, "PCMU", 8000, rtcp_feedback=("nack",))],
        ),
        MediaDescription("1", "audio", 0, "sendrecv", [Codec(0, "PCMU", 8000)]),
    ]
    assert description.candidates[0].ip == "abcd-1234.local"


def test_media_level_credentials_win() -> None:
    text = SESSION_LEVEL.replace("a=inactive", "a=inactive\na=ice-ufrag:medi\na=ice-pwd:media-level-password")
    description = parse_description(text.replace("\n", "\r\n"))
    assert (description.ice_ufrag, description.ice_pwd) == ("medi", "media-level-password")


def test_setup_defaults_to_active() -> None:
    assert parse_description(SESSION_LEVEL.replace("a=setup:passive\n", "")).setup == "active"


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("v=0", "v=1", "not SDP: the first line is not v=0"),
        ("a=ice-ufrag:sess\n", "", "no ice-ufrag"),
        ("a=ice-pwd:session-level-password\n", "", "no ice-pwd"),
        ("a=fingerprint:sha-256 AA:BB\n", "", "no fingerprint"),
        ("a=fingerprint:sha-256 AA:BB", "a=fingerprint:sha-256", "bad fingerprint 'sha-256'"),
        ("a=fingerprint:sha-256 AA:BB", "a=fingerprint:sha-256 AABB", "bad fingerprint 'sha-256 AABB'"),
        ("a=setup:passive", "a=setup:holdconn", "unsupported setup role 'holdconn'"),
        ("a=inactive", "a=inactive\na=setup:x", "m-line 1: unsupported setup role 'x'"),
        ("m=audio 0 UDP", "m=audio x UDP", "m-line 2: bad port 'x'"),
        ("m=audio 0 UDP", "m=audio 65536 UDP", "m-line 2: bad port '65536'"),
        ("m=audio 0 UDP/TLS/RTP/SAVPF 0", "m=audio 0", "m-line 2: bad m= line 'audio 0'"),
        ("96 0\n", "96 x\n", "m-line 1: bad payload type 'x'"),
        ("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP8", "m-line 1: bad rtpmap '96 VP8'"),
        ("a=rtpmap:96 VP8/90000", "a=rtpmap:200 VP8/90000", "m-line 1: bad payload type in '200 VP8/90000'"),
        ("t=0 0", "t=0 0\nbroken", "line 5: not of the form x=value: 'broken'"),
        ("abcd-1234.local", "not-an-address", "bad candidate address 'not-an-address'"),
        ("typ host", "host", "bad candidate 'candidate:0 1 UDP 2122252543 abcd-1234.local 54321 host'"),
    ],
)
def test_bad_sdp(old: str, new: str, reason: str) -> None:
    assert old in SESSION_LEVEL
    with pytest.raises(SdpError) as error:
        parse_description(SESSION_LEVEL.replace(old, new))
    assert str(error.value) == reason


def test_no_media() -> None:
    with pytest.raises(SdpError, match="^no m-line$"):
        parse_description(SESSION_LEVEL.split("m=video")[0])
    with pytest.raises(SdpError, match="not SDP"):
        parse_description("")


def test_offer_with_the_playout_delay_extension() -> None:
    vp8 = Codec(96, "VP8", 90000)
    media = [OfferMedia("v", "video", vp8, ssrc=7, header_extensions=((12, PLAYOUT_DELAY_URI),))]
    lines = build_offer(media, TRANSPORT, session_id=1, session_version=2).split("\r\n")
    assert lines[lines.index("a=rtcp-mux") + 1] == "a=extmap:12 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
    plain = build_offer([OfferMedia("v", "video", vp8, ssrc=7)], TRANSPORT, session_id=1, session_version=2)
    assert "extmap" not in plain


def test_chromium_keeps_the_playout_delay_extension() -> None:
    """Chromium 156 answering sample_offer() with a=extmap:12 playout-delay on the video m-line."""
    audio, video = parse_description((DATA / "answer_chromium_playout_delay.sdp").read_text()).media
    assert audio.header_extensions == ()
    assert video.header_extensions == ((12, PLAYOUT_DELAY_URI),)
    assert video.header_extension_id(PLAYOUT_DELAY_URI) == 12


def test_aiortc_answers_without_the_playout_delay_extension() -> None:
    audio, video = parse_description((DATA / "answer_aiortc.sdp").read_text()).media
    assert video.header_extension_id(PLAYOUT_DELAY_URI) is None


def test_extmap_lines_with_a_direction_or_unreadable() -> None:
    text = SESSION_LEVEL.replace(
        "a=mid:1\n", "a=mid:1\na=extmap:3/recvonly urn:3gpp:video-orientation\na=extmap:x bad\na=extmap:4\n"
    )
    assert parse_description(text).media[1].header_extensions == ((3, "urn:3gpp:video-orientation"),)


def test_session_level_header_extensions_apply_to_every_m_line() -> None:
    text = SESSION_LEVEL.replace("t=0 0\n", "t=0 0\na=extmap:5 " + PLAYOUT_DELAY_URI + "\n")
    assert [media.header_extension_id(PLAYOUT_DELAY_URI) for media in parse_description(text).media] == [5, 5]
