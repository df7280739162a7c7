from __future__ import annotations

from pathlib import Path

import pytest
from fanout.sources.rtsp.messages import (
    MAX_HEADER_BYTES,
    MAX_INTERLEAVED_BYTES,
    InterleavedFrame,
    InterleavedFrameError,
    ResponseParser,
    RtspProtocolError,
    RtspRequest,
    RtspResponse,
    header_parameters,
)

DATA = Path(__file__).parent / "data"
CAPTURED = sorted(DATA.glob("gstreamer_*.txt"))


def test_a_request_is_written_with_its_cseq_and_headers() -> None:
    request = RtspRequest("SETUP", "rtsp://cam/stream/stream=0", 4, (("Transport", "RTP/AVP;unicast;client_port=5000-5001"),))
    assert bytes(request) == (
        b"SETUP rtsp://cam/stream/stream=0 RTSP/1.0\r\nCSeq: 4\r\n"
        b"Transport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n"
    )


@pytest.mark.parametrize("path", CAPTURED, ids=lambda path: path.stem)
def test_gstreamer_responses_parse(path: Path) -> None:
    response = RtspResponse.parse(path.read_bytes())
    assert response.status in (200, 401)
    assert response.header("server") == "GStreamer RTSP server"
    assert response.cseq > 0


def test_the_describe_response_carries_its_sdp_body() -> None:
    response = RtspResponse.parse((DATA / "gstreamer_describe.txt").read_bytes())
    assert response.header("Content-Type") == "application/sdp"
    assert response.header("Content-Base") == "rtsp://127.0.0.1:18555/stream/"
    assert response.body.startswith(b"v=0\r\n")
    assert len(response.body) == int(response.header("Content-Length") or 0)


def test_responses_fed_a_byte_at_a_time_come_out_whole_and_in_order() -> None:
    stream = b"".join(path.read_bytes() for path in CAPTURED)
    parser = ResponseParser()
    responses = [response for byte in stream for response in parser.feed(bytes([byte]))]
    assert [response.cseq for response in responses] == [RtspResponse.parse(p.read_bytes()).cseq for p in CAPTURED]
    assert parser.pending == 0


def test_interleaved_binary_frames_between_responses_are_skipped() -> None:
    options = (DATA / "gstreamer_options.txt").read_bytes()
    responses = ResponseParser().feed(b"$\x01\x00\x03abc" + options)
    assert [response.status for response in responses] == [200]


def test_interleaved_frames_and_responses_come_out_in_order_whatever_the_chunks() -> None:
    options = RtspResponse.parse((DATA / "gstreamer_options.txt").read_bytes())
    stream = b"$\x00\x00\x02ab" + (DATA / "gstreamer_options.txt").read_bytes() + b"$\x01\x00\x00"
    parser = ResponseParser()
    messages = [message for byte in stream for message in parser.feed_all(bytes([byte]))]
    assert messages == [InterleavedFrame(0, b"ab"), options, InterleavedFrame(1, b"")]
    assert bytes(InterleavedFrame(0, b"ab")) == stream[:6]


def test_an_interleaved_frame_longer_than_any_rtp_packet_is_refused() -> None:
    parser = ResponseParser()
    assert parser.feed_all(b"$\x00" + MAX_INTERLEAVED_BYTES.to_bytes(2, "big")) == []
    with pytest.raises(InterleavedFrameError, match=f"{MAX_INTERLEAVED_BYTES + 1} bytes on channel 2"):
        ResponseParser().feed_all(b"$\x02" + (MAX_INTERLEAVED_BYTES + 1).to_bytes(2, "big"))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"HTTP/1.1 200 OK\r\nCSeq: 1\r\n\r\n", "invalid status line"),
        (b"RTSP/1.0 200 OK\r\nCSeq 1\r\n\r\n", "invalid header line"),
        (b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n folded\r\n\r\n", "invalid header line"),
        (b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: -4\r\n\r\n", "invalid Content-Length"),
        ("RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: ²\r\n\r\n".encode(), "invalid Content-Length"),
        (b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 99999999\r\n\r\n", "over the"),
        (b"RTSP/1.0 200 OK\r\nServer: x\r\n\r\n", "without a valid CSeq"),
        (b"RTSP/1.0 20 OK\r\nCSeq: 1\r\n\r\n", "invalid status line"),
        (b"GARBAGE\r\n", "not an RTSP/1.0 response"),
        (b"RTSP/1.0 200 \xff\r\nCSeq: 1\r\n\r\n", "not UTF-8"),
    ],
)
def test_malformed_responses_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(RtspProtocolError, match=reason):
        ResponseParser().feed(data)


def test_an_endless_head_is_refused() -> None:
    with pytest.raises(RtspProtocolError, match="longer than"):
        ResponseParser().feed(b"RTSP/1.0 200 OK\r\n" + b"X: y\r\n" * (MAX_HEADER_BYTES // 6))


def test_header_parameters() -> None:
    assert header_parameters("hsTM-YOhsA3Cqg9+;timeout=30") == ("hsTM-YOhsA3Cqg9+", {"timeout": "30"})
    assert header_parameters("12345678") == ("12345678", {})


def test_runs_of_frames_go_to_the_frame_relay_and_responses_come_out() -> None:
    options = (DATA / "gstreamer_options.txt").read_bytes()
    runs: list[bytes] = []

    def relay(buffer: bytearray, start: int) -> int:  # takes whole frames, as the engine's relay does
        end = start
        while buffer[end : end + 1] == b"$" and len(buffer) >= end + 4 + int.from_bytes(buffer[end + 2 : end + 4], "big"):
            end += 4 + int.from_bytes(buffer[end + 2 : end + 4], "big")
        runs.append(bytes(buffer[start:end]))
        return end

    parser = ResponseParser()
    parser.frame_relay = relay
    frames = bytes(InterleavedFrame(0, b"ab")) + bytes(InterleavedFrame(1, b"c"))
    assert parser.feed_all(frames + options[:10]) == []
    assert [response.status for response in parser.feed_all(options[10:] + b"$\x00\x00\x05ab")] == [200]
    assert parser.feed_all(b"cde") == []
    assert runs[0] == frames and runs[-1] == bytes(InterleavedFrame(0, b"abcde")) and parser.pending == 0


def test_an_oversized_frame_the_relay_refuses_is_an_interleaved_frame_error() -> None:
    def refuse(buffer: bytearray, start: int) -> int:
        raise ValueError("an interleaved frame of 65535 bytes on channel 0 (at most 1984 are taken)")

    parser = ResponseParser()
    parser.frame_relay = refuse
    with pytest.raises(InterleavedFrameError, match="65535 bytes on channel 0"):
        parser.feed_all(b"$\x00\xff\xff")
