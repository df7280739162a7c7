"""The client's state machine, driven by GStreamer's captured answers (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fanout.sources.rtsp.auth import Credentials, RtspAuthError
from fanout.sources.rtsp.client import (
    Channel,
    Described,
    Playing,
    RtspClient,
    RtspRequestError,
    State,
    TransportRequest,
)
from fanout.sources.rtsp.messages import InterleavedFrame, InterleavedFrameError, RtspProtocolError, RtspRequest, RtspResponse

DATA = Path(__file__).parent / "data"
URL = "rtsp://127.0.0.1:18555/stream"


def captured(name: str) -> bytes:
    return (DATA / f"gstreamer_{name}.txt").read_bytes()


def sent(client: RtspClient) -> tuple[str, str, dict[str, str]]:
    """The one request the client queued: method, URL, headers."""
    head = client.data_to_send().decode()
    assert head.endswith("\r\n\r\n") and head.count("\r\n\r\n") == 1, head
    request_line, *lines = head[:-4].split("\r\n")
    method, url, version = request_line.split(" ")
    assert version == "RTSP/1.0"
    return method, url, dict(line.split(": ", 1) for line in lines)


def answer(status: int, cseq: int, *headers: str, body: bytes = b"") -> bytes:
    head = [f"RTSP/1.0 {status} Whatever", f"CSeq: {cseq}", *headers]
    if body:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def described_client(**options: object) -> tuple[RtspClient, Described]:
    client = RtspClient(URL, credentials=Credentials("viewer", "s3cret"), **options)  # type: ignore[arg-type]
    client.start()
    sent(client)
    assert client.receive_data(captured("options")) == []
    sent(client)
    assert client.receive_data(captured("describe_401")) == []
    sent(client)
    (event,) = client.receive_data(captured("describe"))
    assert isinstance(event, Described)
    return client, event


def test_a_whole_session_against_gstreamers_answers() -> None:
    client = RtspClient(URL, credentials=Credentials("viewer", "s3cret"))
    client.start()
    assert sent(client) == ("OPTIONS", URL, {"CSeq": "1", "User-Agent": "fanout"})
    client.receive_data(captured("options"))
    method, url, headers = sent(client)
    assert (method, url, headers["Accept"]) == ("DESCRIBE", URL, "application/sdp")
    assert "Authorization" not in headers
    client.receive_data(captured("describe_401"))
    method, _, headers = sent(client)
    assert method == "DESCRIBE" and headers["CSeq"] == "3"
    assert headers["Authorization"].startswith('Digest username="viewer", realm="GStreamer RTSP Server"')
    (described,) = client.receive_data(captured("describe"))
    assert isinstance(described, Described)
    assert client.state is State.DESCRIBED
    (track,) = described.tracks
    client.setup([TransportRequest(track, 40000, 40001)])
    method, url, headers = sent(client)
    assert (method, url) == ("SETUP", "rtsp://127.0.0.1:18555/stream/stream=0")
    assert headers["Transport"] == "RTP/AVP;unicast;client_port=40000-40001"
    assert "Session" not in headers
    assert client.receive_data(captured("setup")) == []
    method, url, headers = sent(client)
    assert (method, url, headers["Session"], headers["Range"]) == ("PLAY", "rtsp://127.0.0.1:18555/stream/", "hsTM-YOhsA3Cqg9+", "npt=0.000-")
    assert client.receive_data(captured("play")) == [Playing("hsTM-YOhsA3Cqg9+", 60)]
    assert client.keepalive_interval == 30
    client.keepalive()
    method, _, headers = sent(client)
    assert (method, headers["Session"]) == ("GET_PARAMETER", "hsTM-YOhsA3Cqg9+")  # GStreamer lists it in Public
    assert client.receive_data(captured("get_parameter")) == []
    client.teardown()
    assert sent(client)[0] == "TEARDOWN"
    client.receive_data(captured("teardown"))
    assert client.state is State.CLOSED


def test_the_session_timeout_sets_the_keepalive_interval_and_options_keeps_alive_without_get_parameter() -> None:
    client = RtspClient("rtsp://cam/live")
    client.start()
    sent(client)
    client.receive_data(answer(200, 1, "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN"))
    sent(client)
    sdp = b"v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=control:trackID=0\r\n"
    (described,) = client.receive_data(answer(200, 2, "Content-Type: application/sdp", body=sdp))
    assert isinstance(described, Described)
    client.setup([TransportRequest(described.tracks[0], 5000, 5001)])
    assert sent(client)[1] == "rtsp://cam/live/trackID=0"
    client.receive_data(answer(200, 3, "Session: 42;timeout=20", "Transport: RTP/AVP;unicast;client_port=5000-5001"))
    sent(client)
    assert client.receive_data(answer(200, 4)) == [Playing("42", 20)]
    assert client.keepalive_interval == 10
    client.keepalive()
    assert sent(client)[0] == "OPTIONS"
    client.receive_data(answer(405, 5))  # a refused keep-alive does no harm
    assert client.state is State.PLAYING
    client.keepalive()
    sent(client)
    with pytest.raises(RtspRequestError, match="454"):  # Session Not Found: the session is gone
        client.receive_data(answer(454, 6))


def test_get_parameter_refused_as_a_keepalive_gives_way_to_options() -> None:
    client, described = described_client()
    client.setup([TransportRequest(described.tracks[0], 40000, 40001)])
    sent(client)
    client.receive_data(captured("setup"))
    sent(client)
    client.receive_data(captured("play"))
    client.keepalive()
    assert sent(client)[0] == "GET_PARAMETER"
    client.receive_data(answer(501, 6))
    client.keepalive()
    assert sent(client)[0] == "OPTIONS"


def test_a_server_that_refuses_options_is_described_all_the_same() -> None:
    client = RtspClient("rtsp://cam/live")
    client.start()
    sent(client)
    client.receive_data(answer(404, 1))
    assert sent(client)[:2] == ("DESCRIBE", "rtsp://cam/live")


def test_a_server_that_wants_credentials_when_none_are_set() -> None:
    client = RtspClient(URL)
    client.start()
    client.receive_data(captured("options"))
    with pytest.raises(RtspAuthError, match="none are set"):
        client.receive_data(captured("describe_401"))


def test_wrong_credentials_fail_after_one_try() -> None:
    client = RtspClient(URL, credentials=Credentials("viewer", "wrong"))
    client.start()
    client.receive_data(captured("options"))
    client.receive_data(captured("describe_401"))
    with pytest.raises(RtspAuthError, match="refused the credentials"):
        client.receive_data(captured("describe_401").replace(b"CSeq: 2", b"CSeq: 3"))


def test_an_error_status_names_the_request() -> None:
    client = RtspClient("rtsp://cam/missing")
    client.start()
    client.receive_data(answer(200, 1))
    with pytest.raises(RtspRequestError, match="DESCRIBE rtsp://cam/missing answered 404 Whatever"):
        client.receive_data(answer(404, 2))


def test_the_quirk_tries_the_path_only_after_a_404() -> None:
    client = RtspClient("rtsp://cam/live/main", quirk=True)
    client.start()
    sent(client)
    client.receive_data(answer(200, 1))
    sent(client)
    client.receive_data(answer(404, 2))
    assert sent(client)[:2] == ("DESCRIBE", "/live/main")
    with pytest.raises(RtspRequestError, match="404"):
        client.receive_data(answer(404, 3))


@pytest.mark.parametrize(
    ("setup_answer", "reason"),
    [
        (answer(200, 4, "Transport: RTP/AVP;unicast"), "without a Session"),
        (answer(200, 4, "Session: abc"), "without a Transport"),
        (answer(200, 4, "Session: abc;timeout=soon", "Transport: RTP/AVP"), "invalid session timeout"),
        (answer(200, 4, "Session: abc", "Transport: RTP/AVP/TCP;interleaved=0-1"), "not the RTP over UDP asked for"),
        (answer(200, 9, "Session: abc", "Transport: RTP/AVP"), "CSeq 9 to no request"),
    ],
)
def test_bad_setup_answers_are_refused_with_the_reason(setup_answer: bytes, reason: str) -> None:
    client, described = described_client()
    client.setup([TransportRequest(described.tracks[0], 40000, 40001)])
    with pytest.raises(RtspProtocolError, match=reason):
        client.receive_data(setup_answer)


def test_a_describe_answer_that_is_not_sdp() -> None:
    client = RtspClient("rtsp://cam/live")
    client.start()
    client.receive_data(answer(200, 1))
    with pytest.raises(RtspProtocolError, match="text/html, not application/sdp"):
        client.receive_data(answer(200, 2, "Content-Type: text/html", body=b"<html>"))


def test_requests_out_of_order_are_programming_errors() -> None:
    client = RtspClient(URL)
    with pytest.raises(RuntimeError, match="idle, not described"):
        client.setup([])
    assert RtspRequest("OPTIONS", URL, 1).method == "OPTIONS"
    assert RtspResponse.parse(captured("options")).status == 200


def test_interleaved_setup_asks_for_channels_and_frames_come_out_as_events() -> None:
    client, described = described_client()
    client.setup([TransportRequest(described.tracks[0], 40000, 40001)], interleaved=True)
    method, _, headers = sent(client)
    assert (method, headers["Transport"]) == ("SETUP", "RTP/AVP/TCP;unicast;interleaved=0-1")
    client.receive_data(answer(200, 4, "Session: abc", "Transport: RTP/AVP/TCP;unicast;interleaved=4-5"))
    assert client.channels == {4: Channel(0, rtcp=False), 5: Channel(0, rtcp=True)}
    assert sent(client)[0] == "PLAY"
    rtp, sender_report = InterleavedFrame(4, b"\x80" * 12), InterleavedFrame(5, b"\x81\xc8" + bytes(26))
    events = client.receive_data(answer(200, 5, "Session: abc") + bytes(rtp) + bytes(sender_report)[:3])
    assert events == [Playing("abc", 60), rtp]
    assert client.receive_data(bytes(sender_report)[3:]) == [sender_report]
    client.send_frame(InterleavedFrame(5, b"pli"))
    assert client.data_to_send() == b"$\x05\x00\x03pli"


def test_a_server_refusing_the_lower_transport_answers_461() -> None:
    client, described = described_client()
    client.setup([TransportRequest(described.tracks[0], 40000, 40001)])
    sent(client)
    with pytest.raises(RtspRequestError, match="461") as refused:
        client.receive_data(answer(461, 4))
    assert refused.value.status == 461


@pytest.mark.parametrize(
    ("transport", "reason"),
    [
        ("RTP/AVP;unicast;client_port=1-2", "not the RTP/AVP/TCP interleaved asked for"),
        ("RTP/AVP/TCP;interleaved=x-1", "invalid interleaved channels"),
        ("RTP/AVP/TCP;interleaved=300-301", "invalid interleaved channels"),
        ("RTP/AVP/TCP;interleaved=3-3", "invalid interleaved channels"),
    ],
)
def test_bad_interleaved_setup_answers_are_refused(transport: str, reason: str) -> None:
    client, described = described_client()
    client.setup([TransportRequest(described.tracks[0], 40000, 40001)], interleaved=True)
    sent(client)
    with pytest.raises(RtspProtocolError, match=reason):
        client.receive_data(answer(200, 4, "Session: abc", f"Transport: {transport}"))


def test_an_oversized_interleaved_frame_is_refused_with_its_size() -> None:
    client, described = described_client()
    client.setup([TransportRequest(described.tracks[0], 40000, 40001)], interleaved=True)
    sent(client)
    with pytest.raises(InterleavedFrameError, match="frame of 3000 bytes on channel 0"):
        client.receive_data(b"$\x00" + (3000).to_bytes(2, "big"))
