"""Writes the committed seed corpora of the engine's fuzz targets (fuzz/seeds/<target>/).

Each seed is a small, valid example of what the target parses, so that a short
run (scripts/test gives each target a few seconds) starts deep inside the
parser instead of spending its time finding an RTP version bit. Run it again
after changing a target's input format: `.venv/bin/python fuzz/make_seeds.py`.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pylibsrtp import Policy, Session

SEEDS = Path(__file__).parent / "seeds"
SRTCP_KEY = bytes([7] * 30)  # srtcp_unprotect's key (AES_CM_128_HMAC_SHA1_80 takes all 30 bytes)


def rtp(payload: bytes, *, pt: int = 96, seq: int = 1, ts: int = 3000, ssrc: int = 0x1234, marker: bool = False,
        csrcs: tuple[int, ...] = (), extension: bytes | None = None, padding: int = 0) -> bytes:
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extension is not None else 0) | len(csrcs)
    header = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    header += b"".join(struct.pack("!I", csrc) for csrc in csrcs)
    if extension is not None:
        header += extension
    tail = bytes(padding - 1) + bytes([padding]) if padding else b""
    return header + payload + tail


ONE_BYTE_EXTENSIONS = struct.pack("!HH", 0xBEDE, 2) + bytes([0x10, 0x61, 0x22, 0x01, 0x02, 0x03, 0, 0])  # mid "a", abs-send-time
TWO_BYTE_EXTENSIONS = struct.pack("!HH", 0x1000, 1) + bytes([0x01, 0x02, 0x72, 0x30])  # rid "r0"
VP8_KEYFRAME = bytes([0x90, 0x80, 0x81, 0x23]) + bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01])
VP8_DELTA = bytes([0x90, 0xE0, 0x81, 0x24, 0x05, 0x40]) + bytes([0x31, 0x02, 0x00])
H264_IDR_START = bytes([0x7C, 0x85, 0x88, 0x84])
H264_STAP_A_SPS_PPS = bytes([0x78, 0x00, 0x04, 0x67, 0x42, 0xC0, 0x1F, 0x00, 0x04, 0x68, 0xCE, 0x3C, 0x80])
VP9_KEYFRAME = bytes([0x8A, 0x00, 0x82, 0x49, 0x83, 0x42, 0x00])
# I (15-bit picture ID), L, B, E: TID 0 and TL0PICIDX, then a keyframe's first bytes (non-flexible mode).
VP9_LAYERED_KEYFRAME = bytes([0xAC, 0x81, 0x23, 0x00, 0x07, 0x82, 0x49, 0x83, 0x42, 0x00])
# I (7-bit), P, L, B, E: TID 2 with U, SID 1; TL0PICIDX.
VP9_UPPER_LAYER = bytes([0xEC, 0x05, 0x52, 0x07, 0x86, 0x00])
# I, P, L, F, B: TID 1, then two reference indices (P_DIFF 1 with N, P_DIFF 2).
VP9_FLEXIBLE = bytes([0xF8, 0x80, 0x09, 0x20, 0x03, 0x04, 0x86])
OPUS = bytes([0xFC, 0xFF, 0xFE])

RECEIVER_REPORT = struct.pack("!BBHI", 0x81, 201, 7, 0x66616E6F) + struct.pack("!IIIIII", 0x1234, 0x01000010, 0x1000, 20, 0, 0)
PLI = struct.pack("!BBHII", 0x81, 206, 2, 0x66616E6F, 0x1234)
FIR = struct.pack("!BBHIIII", 0x84, 206, 4, 0x66616E6F, 0, 0x1234, 0x01000000)
NACK = struct.pack("!BBHIIHH", 0x81, 205, 3, 0x66616E6F, 0x1234, 100, 0b1010)
REMB = struct.pack("!BBHII", 0x8F, 206, 5, 0x66616E6F, 0) + b"REMB" + bytes([1, 0x0B, 0xEB, 0xC2]) + struct.pack("!I", 0x1234)
SENDER_REPORT = struct.pack("!BBHIIIII", 0x80, 200, 6, 0x1234, 0xE0000000, 0x80000000, 90000, 10) + struct.pack("!I", 12000)


def srtcp(packet: bytes) -> bytes:
    policy = Policy(key=SRTCP_KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    return Session(policy).protect_rtcp(packet)


def ingest_input(flags: int, datagrams: list[tuple[int, bytes]]) -> bytes:
    """The ingest target's input: a flags byte, then per datagram its length, a time step and its bytes."""
    return bytes([flags]) + b"".join(bytes([len(d), step]) + d for step, d in datagrams)


def transport_feedback(base: int, count: int, chunks: list[int], deltas: bytes) -> bytes:
    """RTPFB FMT 15 (draft-holmer-rmcat-transport-wide-cc-extensions-01 section 3.1), reference time 1."""
    body = struct.pack("!IIHH", 1, 2, base, count) + bytes([0, 0, 1, 0])
    body += b"".join(struct.pack("!H", chunk) for chunk in chunks) + deltas
    body += bytes(-len(body) % 4)
    return struct.pack("!BBH", 0x80 | 15, 205, len(body) // 4) + body


def temporal_layers_input(codec: str, steps: list[int | bytes], keyframe_first: bool = True) -> bytes:
    """The temporal_layers target's input: a flags byte (1: VP9, 4: AV1, else VP8), then per step
    a cap (an int, 7 for none, | 0x08 for a spatial one) or a packet's payload (bytes; the first
    marked a keyframe start)."""
    data = bytearray([{"vp8": 0, "vp9": 1, "av1": 4}[codec]])
    first = True
    for step in steps:
        if isinstance(step, int):
            data.append(0x80 | step)
        else:
            data.append((0x40 if first and keyframe_first else 0) | len(step))
            data += step
            first = False
    return bytes(data)


def vp8_layered(picture_id: int, layer: int, keyframe: bool = False) -> bytes:
    """X, I (15 bits), L, T; S; then the frame header's P bit."""
    return bytes([0x90, 0xE0, 0x80 | picture_id >> 8, picture_id & 0xFF, picture_id // 4 & 0xFF, layer << 6,
                  0x00 if keyframe else 0x01])  # fmt: skip


def vp9_layered(picture_id: int, layer: int, keyframe: bool = False) -> bytes:
    """I (15 bits), P unless a keyframe, L, B, E; TID, U on the base layer; TL0PICIDX."""
    return bytes([0xAC | (0 if keyframe else 0x40), 0x80 | picture_id >> 8, picture_id & 0xFF,
                  layer << 5 | (0x10 if layer == 0 else 0), picture_id // 4 & 0xFF, 0x82])  # fmt: skip


def av1_layered(layer: int, keyframe: bool = False) -> list[bytes]:
    """One AV1 frame in two packets: W = 1, N on a keyframe, a frame OBU with an extension header
    (temporal_id); then the rest of it (Z, W = 1)."""
    return [bytes([0x18 if keyframe else 0x10, 6 << 3 | 0x04, layer << 5, 0x10, 0x20]), bytes([0x90, 0x30, 0x40])]


def seeds() -> dict[str, dict[str, bytes]]:
    vp8_frames = [(6, rtp(VP8_KEYFRAME, seq=1, marker=True)), (6, rtp(VP8_DELTA, seq=2, ts=6000, marker=True))]
    h264 = [(6, rtp(H264_STAP_A_SPS_PPS, seq=1)), (0, rtp(H264_IDR_START, seq=2, marker=True))]
    other_ssrc = [(1, rtp(VP8_KEYFRAME, seq=9000, ssrc=0x9999, marker=True))]
    pattern = (0, 2, 1, 2)
    return {
        "temporal_layers": {
            "vp9_capped_then_raised": temporal_layers_input(
                "vp9", [0, *(vp9_layered(i, pattern[i % 4], i == 0) for i in range(10)), 7,
                       *(vp9_layered(i, pattern[i % 4]) for i in range(10, 20))]),  # fmt: skip
            "vp9_spatial_capped_then_raised": temporal_layers_input(
                "vp9", [0x08, *(vp9_layered(i // 2, 0, i < 2) if i % 2 == 0 else vp9_layered(i // 2, 0, i < 2)[:3]
                               + bytes([0x12]) + vp9_layered(i // 2, 0)[4:] for i in range(8)), 0x0F,
                       *(vp9_layered(i, 0, i == 6) for i in range(4, 8))]),  # fmt: skip
            "vp8_capped_at_1": temporal_layers_input(
                "vp8", [1, *(vp8_layered(i, pattern[i % 4], i == 0) for i in range(12))]),  # fmt: skip
            "av1_capped_then_raised": temporal_layers_input(
                "av1", [0, *(packet for i in range(8) for packet in av1_layered(pattern[i % 4], i == 0)), 7,
                       *(packet for i in range(8, 12) for packet in av1_layered(pattern[i % 4]))]),  # fmt: skip
        },
        "rtp_header": {
            "plain": rtp(OPUS, pt=111),
            "csrcs": rtp(OPUS, csrcs=(1, 2, 3)),
            "one_byte_extensions": rtp(VP8_DELTA, extension=ONE_BYTE_EXTENSIONS),
            "two_byte_extensions": rtp(VP8_DELTA, extension=TWO_BYTE_EXTENSIONS),
            "padding": rtp(OPUS, padding=4),
        },
        "keyframe": {
            "vp8_keyframe": VP8_KEYFRAME,
            "vp8_delta": VP8_DELTA,
            "h264_idr_start": H264_IDR_START,
            "h264_stap_a": H264_STAP_A_SPS_PPS,
            "vp9_keyframe": VP9_KEYFRAME,
            "vp9_layered_keyframe": VP9_LAYERED_KEYFRAME,
            "vp9_upper_layer": VP9_UPPER_LAYER,
            "vp9_flexible": VP9_FLEXIBLE,
            "av1_layered_frame": av1_layered(2)[0],
            "av1_continued": av1_layered(2)[1],
        },
        "rtcp_feedback": {
            "rr_pli": RECEIVER_REPORT + PLI,
            "rr_nack": RECEIVER_REPORT + NACK,
            "rr_remb": RECEIVER_REPORT + REMB,
            "rr_fir": RECEIVER_REPORT + FIR,
        },
        "transport_feedback": {
            "run_length": transport_feedback(10, 3, [0x2003], bytes([4, 4, 4])),
            "one_bit_vector": transport_feedback(65530, 14, [0xAAAA], bytes([8] * 7)),
            "two_bit_vector_large_delta": transport_feedback(7, 7, [0xD640], bytes([1, 0xFF, 0x38, 2, 3])),
            "with_receiver_report": RECEIVER_REPORT + transport_feedback(1, 2, [0x2002], bytes([1, 1])),
        },
        "srtcp_unprotect": {
            "rr_pli": srtcp(RECEIVER_REPORT + PLI),
            "sr": srtcp(SENDER_REPORT),
            "rr_nack": srtcp(RECEIVER_REPORT + NACK),
        },
        "ingest": {
            "vp8": ingest_input(0x00, vp8_frames),
            "vp8_locked": ingest_input(0x52, vp8_frames + other_ssrc),
            "vp8_srtp": ingest_input(0x01, vp8_frames),
            "h264_parameter_sets": ingest_input(0x02, h264),
            "opus_skew": ingest_input(0x0C, [(4, rtp(OPUS, pt=111, seq=i, ts=960 * i)) for i in range(8)]),
        },
    }


def main() -> None:
    for target, files in seeds().items():
        folder = SEEDS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
    print(f"seeds written to {SEEDS}")


if __name__ == "__main__":
    main()
