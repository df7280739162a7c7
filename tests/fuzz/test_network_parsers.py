"""Property fuzzing of every parser that reads bytes from the network or from a user.

Each parser is fed random input and mutations of real input (captured Chromium
RTCP, STUN from aioice, Chromium's and aiortc's SDP answers, Janus API
requests, WHEP trickle fragments, fanout's own configuration): it must return a value or raise its own
documented error, never anything else. A connected WebRTC peer fed arbitrary
datagrams from anywhere must never raise and must stay connected.
"""

from __future__ import annotations

import json
from pathlib import Path

from fanout.config.jcfg import ConfigError, parse
from fanout.config.loader import DEFAULT_FOLDER
from fanout.core import jansson
from fanout.sources.rtsp.auth import Challenge
from fanout.sources.rtsp.client import RtspClient
from fanout.sources.rtsp.description import parse_tracks
from fanout.sources.rtsp.messages import ResponseParser, RtspError
from fanout.webrtc import rtcp, sctp, sdp
from fanout.webrtc.datachannel import DataChannelOpenMessage, DcepError
from fanout.webrtc.stun import StunError, StunMessage
from fanout.whep.sdpfrag import SdpFragError, parse_sdpfrag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.webrtc.test_peer import BROWSER, connected_peer

WEBRTC_DATA = Path(__file__).parents[1] / "webrtc" / "data"
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

STUN_REQUEST = (WEBRTC_DATA / "stun_request_aioice.bin").read_bytes()
RTCP_COMPOUNDS = [(WEBRTC_DATA / name).read_bytes() for name in ("rtcp_chromium_rr_nack.bin", "rtcp_chromium_rr_pli.bin")]
SDP_ANSWERS = [(WEBRTC_DATA / name).read_text() for name in ("answer_chromium.sdp", "answer_aiortc.sdp")]
JANUS_REQUESTS = [
    json.dumps({"janus": "message", "transaction": "t", "body": {"request": "watch", "id": 1}}),
    json.dumps({"janus": "trickle", "transaction": "t", "candidate": {"sdpMid": "v", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}}),
]
SCTP_PACKETS = [
    (WEBRTC_DATA / name).read_bytes()
    for name in ("sctp_init_chromium.bin", "sctp_dcep_open_chromium.bin", "sctp_sack_chromium.bin")
]
RTSP_DATA = Path(__file__).parents[1] / "sources" / "rtsp" / "data"
RTSP_RESPONSES = [path.read_bytes() for path in sorted(RTSP_DATA.glob("gstreamer_*.txt"))]
CONFIG_TEXTS = [(DEFAULT_FOLDER / name).read_text() for name in ("janus.jcfg", "janus.plugin.streaming.jcfg")]


@st.composite
def mutations(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with some bytes overwritten, some cut, some inserted."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[position] = draw(st.integers(0, 255))
        elif action == "cut" and data:
            del data[position : position + draw(st.integers(1, 16))]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif action == "truncate":
            del data[position:]
    return bytes(data)


def text_mutations(seeds: list[str]) -> st.SearchStrategy[str]:
    return mutations([seed.encode() for seed in seeds]).map(lambda data: data.decode("utf-8", errors="replace"))


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutations([STUN_REQUEST])))
def test_stun_parser_raises_only_stun_errors(data: bytes) -> None:
    try:
        message = StunMessage.parse(data)
    except StunError:
        return
    message.verify_integrity(b"password")  # a parsed message can be checked without raising


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutations(RTCP_COMPOUNDS)))
def test_rtcp_parser_raises_only_rtcp_errors(data: bytes) -> None:
    try:
        rtcp.parse_compound(data)
    except rtcp.RtcpError:
        pass


def with_checksum(data: bytes) -> bytes:
    """``data`` with a correct SCTP checksum, so that mutations reach the chunk parsers."""
    if len(data) < 12:
        return data
    return data[:8] + sctp.crc32c(data[:8] + bytes(4) + data[12:]).to_bytes(4, "little") + data[12:]


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutations(SCTP_PACKETS), mutations(SCTP_PACKETS).map(with_checksum)))
def test_sctp_parsers_raise_only_sctp_errors(data: bytes) -> None:
    try:
        packet = sctp.Packet.parse(data)
    except sctp.SctpPacketError:
        return
    for chunk in packet.chunks:
        try:
            if chunk.type == sctp.DATA:
                payload = sctp.DataChunk.parse(chunk.flags, chunk.body).payload
                try:
                    DataChannelOpenMessage.parse(payload)
                except DcepError:
                    pass
            elif chunk.type in (sctp.INIT, sctp.INIT_ACK):
                sctp.InitChunk.parse(chunk.body)
            elif chunk.type == sctp.SACK:
                sctp.SackChunk.parse(chunk.body)
        except sctp.SctpPacketError:
            pass
    sctp.SctpAssociation().receive(data, 0.0)  # a fresh association takes any parsed packet


@FUZZ
@given(st.one_of(st.text(max_size=500), text_mutations(SDP_ANSWERS)))
def test_sdp_parser_raises_only_sdp_errors(text: str) -> None:
    try:
        sdp.parse_description(text)
    except sdp.SdpError:
        pass


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutations([request.encode() for request in JANUS_REQUESTS])))
def test_janus_json_parser_raises_only_json_errors(data: bytes) -> None:
    try:
        jansson.loads(data)
    except jansson.JsonError:
        pass
    try:
        jansson.loads_sequence(data)
    except jansson.JsonError:
        pass


@FUZZ
@given(st.one_of(st.text(max_size=300), text_mutations(SDP_ANSWERS)))
def test_whep_trickle_fragment_parser_raises_only_its_errors(text: str) -> None:
    try:
        parse_sdpfrag(text)
    except SdpFragError:
        pass


@FUZZ
@given(st.one_of(st.text(max_size=300), text_mutations(CONFIG_TEXTS)))
def test_configuration_parser_raises_only_config_errors(text: str) -> None:
    try:
        parse(text, "fuzz.jcfg")
    except ConfigError as error:
        assert str(error).startswith("fuzz.jcfg")


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutations(RTSP_RESPONSES), mutations([b"".join(RTSP_RESPONSES)])))
def test_rtsp_response_parser_raises_only_rtsp_errors(data: bytes) -> None:
    """What an RTSP server sends: the parser, the SDP of a DESCRIBE, a challenge, and a client
    in the middle of a session all raise RtspError or nothing."""
    try:
        for response in ResponseParser().feed(data):
            parse_tracks(response.body.decode("utf-8", errors="replace"), "rtsp://cam/")
            for value in response.all_headers("WWW-Authenticate"):
                Challenge.parse(value)
    except RtspError:
        pass
    client = RtspClient("rtsp://cam/live")
    client.start()
    try:
        client.receive_data(data)
    except RtspError:
        pass


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.binary(max_size=200), mutations([STUN_REQUEST, *RTCP_COMPOUNDS])),
            st.sampled_from([BROWSER, ("127.0.0.1", 4444), ("10.1.2.3", 5555)]),
        ),
        max_size=20,
    )
)
def test_a_connected_peer_survives_any_datagrams(datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
    peer, _, _ = connected_peer()
    for data, address in datagrams:
        peer.receive(data, address, now=2.0)
    peer.drain_transmits()
    peer.drain_events()
    assert peer.address == BROWSER
    assert not peer.closed or any(20 <= data[0] <= 63 for data, address in datagrams if data and address == BROWSER)
