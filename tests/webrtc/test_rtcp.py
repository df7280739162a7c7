from pathlib import Path

import pytest

from fanout.webrtc.rtcp import (
    Bye,
    FullIntraRequest,
    GenericNack,
    PictureLossIndication,
    ReceiverReport,
    ReceptionReport,
    Remb,
    RtcpError,
    RtcpPacket,
    SdesChunk,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    parse_compound,
)

DATA = Path(__file__).parent / "data"

BLOCK = bytes.fromhex("1234567805fffffe0001ffff00000020aabbccdd00010000")
REPORT = ReceptionReport(
    ssrc=0x12345678,
    fraction_lost=5,
    packets_lost=-2,
    highest_sequence=0x1FFFF,
    jitter=32,
    last_sr=0xAABBCCDD,
    delay_since_last_sr=65536,
)
SR = bytes.fromhex("81c8000c11111111e1a2b3c4d5e6f70800015f900000000a00000fa0") + BLOCK
SR_EMPTY = bytes.fromhex("80c8000611111111e1a2b3c4d5e6f70800015f900000000a00000fa0")
RR = bytes.fromhex("81c9000722222222") + BLOCK
RR_EMPTY = bytes.fromhex("80c9000122222222")
SDES = bytes.fromhex("81ca00061111111101106162636465666768696a6b6c6d6e6f700000")
SDES_ALIGNED = bytes.fromhex("81ca0003111111110102686900000000")
BYE = bytes.fromhex("81cb000111111111")
BYE_REASON = bytes.fromhex("81cb00021111111103627965")
NACK = bytes.fromhex("81cd0004000000011111111100640005ffff0001")
PLI = bytes.fromhex("81ce00020000000111111111")
FIR = bytes.fromhex("84ce000400000001000000001111111107000000")
REMB = bytes.fromhex("8fce0005000000010000000052454d42010bd09011111111")
APP = bytes.fromhex("80cc00021111111174657374")
TRANSPORT_CC = bytes.fromhex("8fcd000400000001111111110001000200000100")

EXPECTED: list[tuple[bytes, RtcpPacket]] = [
    (SR, SenderReport(0x11111111, 0xE1A2B3C4D5E6F708, 90000, 10, 4000, [REPORT])),
    (SR_EMPTY, SenderReport(0x11111111, 0xE1A2B3C4D5E6F708, 90000, 10, 4000)),
    (RR, ReceiverReport(0x22222222, [REPORT])),
    (RR_EMPTY, ReceiverReport(0x22222222)),
    (SDES, SourceDescription([SdesChunk(0x11111111, [(1, b"abcdefghijklmnop")])])),
    (SDES_ALIGNED, SourceDescription([SdesChunk(0x11111111, [(1, b"hi")])])),
    (BYE, Bye([0x11111111])),
    (BYE_REASON, Bye([0x11111111], b"bye")),
    (NACK, GenericNack(1, 0x11111111, [100, 101, 103, 65535, 0])),
    (PLI, PictureLossIndication(1, 0x11111111)),
    (FIR, FullIntraRequest(1, 0, [(0x11111111, 7)])),
    (REMB, Remb(1, 1_000_000, [0x11111111])),
    (APP, UnknownRtcp(204, 0, bytes.fromhex("1111111174657374"))),
    (TRANSPORT_CC, UnknownRtcp(205, 15, bytes.fromhex("00000001111111110001000200000100"))),
]


@pytest.mark.parametrize(("data", "packet"), EXPECTED, ids=[type(p).__name__ for _, p in EXPECTED])
def test_round_trip(data: bytes, packet: RtcpPacket) -> None:
    assert parse_compound(data) == [packet]
    assert type(packet).parse(data) == packet
    assert bytes(packet) == data


def test_compound() -> None:
    data = SR + SDES + NACK + REMB + BYE
    packets = parse_compound(data)
    assert [type(p) for p in packets] == [SenderReport, SourceDescription, GenericNack, Remb, Bye]
    assert b"".join(bytes(p) for p in packets) == data


def test_padding_is_removed() -> None:
    padded = bytes.fromhex("a0c900022222222200000004")
    assert parse_compound(padded) == [ReceiverReport(0x22222222)]


def test_nack_packs_runs_into_bitmasks() -> None:
    nack = GenericNack(1, 2, [10, 11, 26, 27, 50])
    assert bytes(nack)[12:] == bytes.fromhex("000a8001001b000000320000")
    assert GenericNack.parse(bytes(nack)).lost == [10, 11, 26, 27, 50]


def test_remb_large_bitrate() -> None:
    remb = Remb(1, 2_000_000_000, [1, 2])
    assert Remb.parse(bytes(remb)) == Remb(1, (2_000_000_000 >> 13) << 13, [1, 2])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty RTCP packet"),
        (b"\x81\xc9\x00", "packet 1: 3 bytes left, too short for a header"),
        (bytes.fromhex("41c9000122222222"), "packet 1: RTCP version 1, expected 2"),
        (bytes.fromhex("8060000122222222"), "packet 1: packet type 96 is not RTCP"),
        (RR[:-4], "packet 1: length field says 32 bytes, 28 left"),
        (RR_EMPTY + RR[:10], "packet 2: length field says 32 bytes, 10 left"),
        (bytes.fromhex("82c90007") + RR[4:], "packet 1: RR: 24 bytes is too short for 2 report blocks"),
        (bytes.fromhex("80c8000111111111"), "packet 1: SR: 4 bytes is too short for sender info"),
        (bytes.fromhex("80c90000"), "packet 1: RR: no SSRC"),
        (bytes.fromhex("a1c9000122222200"), "packet 1: RR: bad padding"),
        (bytes.fromhex("81ca00021111111101056869"), "packet 1: SDES: item 1 truncated"),
        (bytes.fromhex("82ca0003111111110102686900000000")[:-4], "packet 1: length field says 16 bytes, 12 left"),
        (bytes.fromhex("82ca0003111111110102686900000000"), "packet 1: SDES: chunk 2 truncated"),
        (bytes.fromhex("82cb000111111111"), "packet 1: BYE: 4 bytes is too short for 2 SSRCs"),
        (bytes.fromhex("81cb00021111111109627965"), "packet 1: BYE: reason truncated"),
        (bytes.fromhex("81cd00020000000111111111"), "packet 1: NACK: no FCI"),
        (bytes.fromhex("81cd000100000001"), "packet 1: NACK: 4 bytes is too short for the SSRCs"),
        (bytes.fromhex("81ce0003000000011111111100000000"), "packet 1: PLI: 4 unexpected bytes of FCI"),
        (
            bytes.fromhex("84ce0003000000010000000011111111"),
            "packet 1: FIR: FCI of 4 bytes is not a list of 8-byte entries",
        ),
        (REMB[:-8] + b"\x02" + REMB[-7:], "packet 1: REMB: FCI of 12 bytes for 2 SSRCs"),
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(RtcpError) as error:
        parse_compound(data)
    assert str(error.value) == reason


def test_garbage() -> None:
    with pytest.raises(RtcpError):
        parse_compound(bytes(range(256)))
    with pytest.raises(RtcpError, match="SR: packet type 201"):
        SenderReport.parse(RR)
    with pytest.raises(RtcpError, match="PLI: feedback message type 4, expected 1"):
        PictureLossIndication.parse(FIR)


def test_chromium_receiver_report_and_nack() -> None:
    """Chromium 156 (recvonly video, SSRC 2222), a reduced-size compound: RR then NACK, no SDES."""
    data = (DATA / "rtcp_chromium_rr_nack.bin").read_bytes()
    packets = parse_compound(data)
    assert packets == [
        ReceiverReport(1, [ReceptionReport(2222, 36, 1, 26, 1043, 0, 0)]),
        GenericNack(1, 2222, [20]),
    ]
    assert b"".join(bytes(p) for p in packets) == data


def test_chromium_receiver_report_and_pli() -> None:
    data = (DATA / "rtcp_chromium_rr_pli.bin").read_bytes()
    packets = parse_compound(data)
    assert packets == [
        ReceiverReport(1, [ReceptionReport(2222, 0, 1, 39, 1111, 0, 0)]),
        PictureLossIndication(1, 2222),
    ]
    assert b"".join(bytes(p) for p in packets) == data
